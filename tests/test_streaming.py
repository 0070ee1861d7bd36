"""Audio chunks decoded while generating (worker.engine.streaming through the engine)."""

import numpy as np
import pytest

from tests.conftest import engine_in_modes, noise
from worker.engine import GenerationRequest
from worker.engine.streaming import RowStreamer

# Every test here runs in float32 and in int8-rows (tests.conftest.ENGINE_MODES).
engine = engine_in_modes()


def _collect():
    chunks = []
    return chunks, lambda audio, offset: chunks.append((offset, audio.copy()))


def _joined(chunks):
    offsets = [offset for offset, _ in chunks]
    pieces = [audio for _, audio in chunks]
    expected = np.cumsum([0] + [p.shape[1] for p in pieces[:-1]])
    assert offsets == list(expected), "chunks must follow one another without gaps or overlaps"
    return np.concatenate(pieces, axis=1)


def test_chunks_equal_the_continuation(engine):
    chunks_equal_the_continuation(engine)


def test_stereo_chunks_equal_the_continuation(stereo_engine):
    chunks_equal_the_continuation(stereo_engine)


def chunks_equal_the_continuation(eng):
    prompt = noise(eng.channels, 2.0, 32000)
    chunks, on_audio = _collect()
    result = eng.generate([GenerationRequest(prompt, 32000, 9.0, seed=5, on_audio=on_audio)])[0]
    continuation = result.audio[:, prompt.shape[1]:]
    assert len(chunks) >= 5  # 7 s of new audio in ~1 s chunks, the first after 0.5 s
    assert chunks[0][1].shape[1] == 25 * eng.hop_length
    joined = _joined(chunks)
    assert joined.shape == continuation.shape
    np.testing.assert_allclose(joined, continuation, atol=1e-4)


def test_streaming_does_not_change_the_result(engine):
    prompt = noise(1, 2.0, 32000, seed=3)
    plain = engine.generate([GenerationRequest(prompt, 32000, 6.0, seed=11)])[0]
    _, on_audio = _collect()
    streamed = engine.generate([GenerationRequest(prompt, 32000, 6.0, seed=11, on_audio=on_audio)])[0]
    np.testing.assert_array_equal(plain.audio, streamed.audio)


def test_rows_of_one_batch_stream_their_own_audio(engine):
    a_chunks, a_audio = _collect()
    b_chunks, b_audio = _collect()
    requests = [
        GenerationRequest(noise(1, 2.0, 32000, seed=1), 32000, 8.0, seed=1, on_audio=a_audio),
        GenerationRequest(noise(1, 3.0, 32000, seed=2), 32000, 5.0, seed=2),  # not streaming
        GenerationRequest(noise(1, 1.5, 32000, seed=3), 32000, 4.0, seed=3, on_audio=b_audio),
    ]
    results = engine.generate(requests)
    for chunks, req, res in ((a_chunks, requests[0], results[0]), (b_chunks, requests[2], results[2])):
        prompt_samples = (req.prompt_audio.shape[1] // engine.hop_length) * engine.hop_length
        np.testing.assert_allclose(_joined(chunks), res.audio[:, prompt_samples:], atol=1e-4)


def test_a_failing_listener_stops_streaming_but_not_generation(engine):
    calls = []

    def broken(audio, offset):
        calls.append(offset)
        raise ConnectionError("listener went away")

    result = engine.generate([GenerationRequest(noise(1, 2.0, 32000), 32000, 6.0, seed=4, on_audio=broken)])[0]
    assert calls == [0]
    assert result.audio.shape[1] == 6 * 32000


class _Listener:
    """An ``on_audio`` with ``wanted()``, as the worker's: chunks are decoded only while it says so."""

    def __init__(self, listen_from_step: int | None):
        self.listen_from_step = listen_from_step  # None: nobody ever listens
        self.step = 0
        self.chunks: list[tuple[int, np.ndarray, int]] = []  # (offset, audio, step it came at)

    def wanted(self) -> bool:
        return self.listen_from_step is not None and self.step >= self.listen_from_step

    def progress(self, step: int, total: int) -> None:
        self.step = step

    def __call__(self, audio, offset) -> None:
        self.chunks.append((offset, audio.copy(), self.step))


@pytest.mark.parametrize("listen_from_step", [None, 150])
def test_chunks_wait_for_a_listener_and_none_is_lost(engine, listen_from_step):
    prompt = noise(1, 2.0, 32000, seed=6)
    listener = _Listener(listen_from_step)
    request = GenerationRequest(prompt, 32000, 9.0, seed=5, on_audio=listener, on_progress=listener.progress)
    result = engine.generate([request])[0]
    total = engine.max_new_tokens(350)
    steps = [step for _, _, step in listener.chunks]
    if listen_from_step is None:
        # No decode while generating: everything comes from the final decode, in chunks of the usual size.
        assert set(steps) == {total}
        assert len(listener.chunks) >= 6
    else:
        # Nothing before someone listens; then one decode catches up on all that was made meanwhile.
        assert min(steps) >= listen_from_step and len(set(steps)) >= 3
        assert listener.chunks[0][1].shape[1] > 100 * engine.hop_length
    joined = _joined([(offset, audio) for offset, audio, _ in listener.chunks])
    np.testing.assert_allclose(joined, result.audio[:, prompt.shape[1]:], atol=1e-4)


def test_window_decode_cost_does_not_grow_with_length():
    """Each chunk decodes at most context + chunk + hold frames, however long the row already is."""
    import torch

    decoded_lengths = []

    def decode(codes):
        decoded_lengths.append(codes.shape[-1])
        return np.zeros((1, codes.shape[-1] * 640), dtype=np.float32)

    streamer = RowStreamer(lambda audio, offset: None, new_frames=1500, continuation_samples=1500 * 640, hop=640)
    streamer.bind(torch.zeros((4, 300), dtype=torch.long), decode)
    frames = torch.zeros((4, 1500), dtype=torch.long)
    for available in range(1, 1501):
        streamer.advance(lambda a, b: frames[:, a:b], available)
    assert len(decoded_lengths) > 25
    assert max(decoded_lengths) <= 50 + 50 + 4
    # 0.5 s first, then whole seconds; the rest comes from the final decode (finish)
    assert streamer.emitted_samples == (25 + 29 * 50) * 640
    streamer.finish(np.ones((1, 1500 * 640), dtype=np.float32))
    assert streamer.emitted_samples == 1500 * 640
