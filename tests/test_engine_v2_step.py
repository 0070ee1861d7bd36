"""Engine v2's decoder step and KV cache against transformers' own MusicGen forward pass."""

from __future__ import annotations

import pytest
import torch
from transformers import MusicgenForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from worker.engine import delay
from worker.engine.kv_cache import KVCache
from worker.engine.step import DecoderStep


@pytest.fixture(scope="module")
def model(tiny_model):
    return MusicgenForConditionalGeneration.from_pretrained(
        tiny_model, attn_implementation={"decoder": "sdpa", "text_encoder": "sdpa"}).eval()


def text_projection(model):
    if (model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
            and model.decoder.config.cross_attention_hidden_size is None):
        return model.enc_to_dec_proj
    return None


def make_cache(model, rows: int, max_positions: int = 64, max_text: int = 16) -> KVCache:
    config = model.decoder.config
    return KVCache(layers=config.num_hidden_layers, rows=rows, heads=config.num_attention_heads,
                   head_dim=config.hidden_size // config.num_attention_heads, max_positions=max_positions,
                   max_text=max_text, device=model.device)


def a_task(model, prompt_frames: int, new_frames: int, text_tokens: list[int], seed: int):
    """A random but valid delayed sequence (sampled positions filled) and its text states."""
    generator = torch.Generator().manual_seed(seed)
    k = model.decoder.config.num_codebooks
    channels = model.decoder.config.audio_channels
    prompt = torch.randint(0, 2048, (k, prompt_frames), generator=generator)
    ids = delay.build_sequence(prompt, new_frames, delay.delays(k, channels))
    free = ids == -1
    ids[free] = torch.randint(0, 2048, (int(free.sum()),), generator=generator)
    with torch.inference_mode():
        states = model.text_encoder(input_ids=torch.tensor([text_tokens], device=model.device)).last_hidden_state[0]
    return ids.to(model.device), states


def reference_logits(model, ids: torch.Tensor, states: torch.Tensor, guided: bool) -> torch.Tensor:
    """transformers' logits for every position: (rows, K, length, vocab), rows = 2 with guidance."""
    batch_states, mask = states[None], torch.ones((1, states.shape[0]), dtype=torch.long)
    decoder_ids = ids
    if guided:
        batch_states = torch.cat([batch_states, torch.zeros_like(batch_states)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
        decoder_ids = ids.repeat(2, 1)
    with torch.inference_mode():
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=batch_states), attention_mask=mask,
                       decoder_input_ids=decoder_ids).logits
    return logits.view(2 if guided else 1, ids.shape[0], ids.shape[1], -1)


def test_prefill_in_chunks_then_decoding_two_tasks_together_matches_transformers(model):
    # Task A: guided (rows 0-1), 7 prompt frames; task B: unguided (row 2), 3 prompt frames and a
    # different text. They decode together, each at its own position.
    a_ids, a_text = a_task(model, 7, 9, [5, 6, 7, 1], seed=1)
    b_ids, b_text = a_task(model, 3, 12, [9, 1], seed=2)
    a_ref = reference_logits(model, a_ids, a_text, guided=True)
    b_ref = reference_logits(model, b_ids, b_text, guided=False)
    step = DecoderStep(model.decoder, make_cache(model, rows=4), text_projection(model))
    a_rows, b_rows = slice(0, 2), slice(2, 3)
    a_len, b_len = 1 + 7, 1 + 3  # positions [0, 1 + P) are the prompt
    with torch.inference_mode():
        step.set_text(a_rows, a_text, guided=True)
        step.set_text(b_rows, b_text, guided=False)
        for start in range(0, a_len, 3):  # chunks of 3 positions: 3, 3, 2
            chunk = a_ids[None, :, start : min(start + 3, a_len)].repeat(2, 1, 1)
            logits = step.prefill(a_rows, chunk, start)
        torch.testing.assert_close(logits, a_ref[:, :, a_len - 1], rtol=0, atol=1e-5)
        logits = step.prefill(b_rows, b_ids[None, :, :b_len], 0)
        torch.testing.assert_close(logits, b_ref[:, :, b_len - 1], rtol=0, atol=1e-5)

        steps = 0
        while a_len < a_ids.shape[1] and b_len < b_ids.shape[1]:
            ids = torch.stack([a_ids[:, a_len], a_ids[:, a_len], b_ids[:, b_len]])
            positions = torch.tensor([a_len, a_len, b_len])
            logits = step.decode(slice(0, 3), ids, positions)
            torch.testing.assert_close(logits[:2], a_ref[:, :, a_len], rtol=0, atol=1e-5)
            torch.testing.assert_close(logits[2:], b_ref[:, :, b_len], rtol=0, atol=1e-5)
            a_len, b_len, steps = a_len + 1, b_len + 1, steps + 1
        assert steps >= 10


def test_compaction_keeps_a_moved_task_computing_the_same_logits(model):
    ids, text = a_task(model, 5, 6, [3, 4, 1], seed=3)
    ref = reference_logits(model, ids, text, guided=True)
    cache = make_cache(model, rows=4)
    step = DecoderStep(model.decoder, cache, text_projection(model))
    length = 1 + 5
    with torch.inference_mode():
        step.set_text(slice(1, 3), text, guided=True)  # as if row 0 belonged to a task that left
        step.prefill(slice(1, 3), ids[None, :, :length].repeat(2, 1, 1), 0)
        cache.move(1, 0, 2, length)  # overlapping move down by one row
        for position in range(length, ids.shape[1]):
            logits = step.decode(slice(0, 2), ids[:, position][None].repeat(2, 1), torch.tensor([position, position]))
            torch.testing.assert_close(logits, ref[:, :, position], rtol=0, atol=1e-5)


def test_the_delay_pattern_matches_transformers(model):
    # transformers' build_delay_pattern_mask on [start] + prompt, for the same total length.
    for channels_model in (model,):
        k = channels_model.decoder.config.num_codebooks
        prompt = torch.randint(0, 2048, (k, 6), generator=torch.Generator().manual_seed(0))
        new = 5
        ours = delay.build_sequence(prompt, new, delay.delays(k, 1))
        start = torch.cat([torch.full((k, 1), 2048), prompt], dim=1)
        _, pattern = channels_model.decoder.build_delay_pattern_mask(start, 2048, max_length=ours.shape[1])
        assert torch.equal(ours, pattern)


def test_the_stereo_delay_pattern_matches_transformers(tiny_stereo_model):
    stereo = MusicgenForConditionalGeneration.from_pretrained(tiny_stereo_model).eval()
    k = stereo.decoder.config.num_codebooks
    assert k == 8
    prompt = torch.randint(0, 2048, (k, 6), generator=torch.Generator().manual_seed(0))
    ours = delay.build_sequence(prompt, 4, delay.delays(k, 2))
    start = torch.cat([torch.full((k, 1), 2048), prompt], dim=1)
    _, pattern = stereo.decoder.build_delay_pattern_mask(start, 2048, max_length=ours.shape[1])
    assert torch.equal(ours, pattern)
    # Un-delaying returns exactly the frames that were placed.
    frames = torch.arange(k * 4).view(k, 4)
    filled = ours.clone()
    for c, d in enumerate(delay.delays(k, 2)):
        filled[c, 1 + 6 + d : 1 + 6 + d + 4] = frames[c]
    assert torch.equal(delay.new_frames(filled, 6, delay.delays(k, 2), 0, 4), frames)
