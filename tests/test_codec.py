"""The tiled EnCodec decoder gives transformers' decode, up to float rounding, at every length and layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, MusicgenForConditionalGeneration
from transformers.models.encodec.modeling_encodec import EncodecConvTranspose1d

from worker.engine.codec import PhaseConvTranspose1d, TiledDecoder, _fold_weight_norm

# float32 rounding of the same sums in another order: far below anything audible (-120 dB of full scale)
RELATIVE = 1e-5


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    scale = theirs.abs().max().item()
    assert scale > 0
    assert (ours - theirs).abs().max().item() <= RELATIVE * scale


@pytest.mark.parametrize("kernel,stride,causal", [(16, 8, False), (10, 5, False), (8, 4, False), (7, 3, False),
                                                   (5, 5, False), (8, 4, True), (9, 4, True)])
def test_a_transposed_convolution_as_phases_is_the_same_layer(kernel, stride, causal):
    torch.manual_seed(kernel * 10 + stride)
    config = EncodecConfig(use_causal_conv=causal, trim_right_ratio=1.0)
    layer = EncodecConvTranspose1d(config, 6, 5, kernel, stride).eval()
    phases = PhaseConvTranspose1d(_fold_weight_norm(layer))
    for frames in (1, 2, 13):
        x = torch.randn(2, 6, frames)
        with torch.inference_mode():
            expected = layer(x)
            _close(phases(x), expected)
        assert expected.shape[-1] == frames * stride  # what the tiles rely on


@pytest.fixture(scope="module", params=["tiny-mono", "tiny-stereo"])
def model(request, tiny_model, tiny_stereo_model):
    path = tiny_model if request.param == "tiny-mono" else tiny_stereo_model
    return MusicgenForConditionalGeneration.from_pretrained(path).eval()


@pytest.mark.parametrize("tile_frames", [7, 100])
def test_tiled_decode_is_transformers_decode_at_every_length(model, tile_frames):
    encodec = model.audio_encoder
    decoder = TiledDecoder(encodec, tile_frames=tile_frames)
    assert decoder.margin == 4  # MusicGen's EnCodec past its LSTM: a few frames each side
    codebooks = model.decoder.config.num_codebooks // model.decoder.config.audio_channels
    generator = torch.Generator().manual_seed(tile_frames)
    # one frame; shorter than a tile with its margins; exactly that; many tiles and a remainder
    for frames in (1, 5, tile_frames + 2 * decoder.margin, 3 * tile_frames + 2, 251):
        codes = torch.randint(0, encodec.config.codebook_size, (2, codebooks, frames), generator=generator)
        with torch.inference_mode():
            expected = encodec.decode(codes[None], [None]).audio_values
            _close(decoder.decode(codes), expected)


def test_building_it_leaves_the_models_own_decoder_working(model):
    codes = torch.zeros(1, 1, model.decoder.config.num_codebooks // model.decoder.config.audio_channels, 9,
                        dtype=torch.long)
    with torch.inference_mode():
        before = model.audio_encoder.decode(codes, [None]).audio_values
        TiledDecoder(model.audio_encoder)
        after = model.audio_encoder.decode(codes, [None]).audio_values
    assert torch.equal(before, after)
    assert any("parametrizations" in name for name, _ in model.audio_encoder.decoder.named_parameters())


def test_a_scale_multiplies_the_audio_as_in_transformers(model):
    encodec = model.audio_encoder
    codebooks = model.decoder.config.num_codebooks // model.decoder.config.audio_channels
    codes = torch.randint(0, encodec.config.codebook_size, (1, codebooks, 30), generator=torch.Generator().manual_seed(3))
    scale = torch.tensor([[0.37]])
    with torch.inference_mode():
        _close(TiledDecoder(encodec).decode(codes, scale), encodec.decode(codes[None], [scale]).audio_values)


def test_the_cpu_engine_decodes_results_tiled_and_equal_to_transformers(stereo_engine):
    engine = stereo_engine
    assert engine.codec is not None
    frames = 260
    codes = torch.randint(0, engine.model.audio_encoder.config.codebook_size, (engine.num_codebooks, frames),
                          generator=torch.Generator().manual_seed(5))
    ours = engine._decode(codes, [None, None])
    assert ours.shape == (2, frames * engine.hop_length)
    with torch.inference_mode():
        # stereo codebooks interleave left and right; transformers decodes each channel alone
        theirs = [engine.model.audio_encoder.decode(codes[c::2][None, None], [None]).audio_values[0, 0].numpy()
                  for c in (0, 1)]
    np.testing.assert_allclose(ours, np.stack(theirs), rtol=0, atol=RELATIVE * np.abs(theirs).max())
