"""MusicGen *melody* continuation engine (``MusicgenMelodyForConditionalGeneration``).

A melody model continues a prompt like plain MusicGen (same EnCodec frames,
same delay pattern, same prompt-in-output; see ``worker.engine``), but it is
conditioned differently, and this module is about that difference:

- **No cross-attention.** The conditioning is a *prefix* of the decoder's
  input: ``chroma_length`` (235) chroma frames projected to the decoder width,
  then the projected T5 states of the text. The decoder token ids (start token
  2048, then the prompt's codes) come after it, so the delay-pattern layout of
  the ids, the step count (``new_frames + 3``) and the un-delaying are exactly
  those of ``MusicGenEngine``, whose helpers this class inherits.
- **Chroma.** With ``melody_conditioning`` the chroma is that of the prompt
  audio (12 pitch classes, one-hot per 4096-sample frame at 32 kHz, tiled to
  ``chroma_length`` frames as transformers does); without it, the "no melody"
  chroma transformers uses: every frame one-hot on bin 0 (pitch class C; so
  a prompt whose strongest pitch class is C throughout, or silence, is
  conditioned exactly as if no melody were given).
  ``ChromaExtractor`` is ``MusicgenMelodyFeatureExtractor``'s computation in
  plain torch: transformers only constructs that class when torchaudio is
  installed, and no torchaudio release matches this project's torch.
  ``tests/test_melody_engine`` checks it against librosa's chroma.
- **Classifier-free guidance** is ours, as in ``MusicGenEngine``: a guided
  task holds two rows, its prefix conditional then the unconditional one
  transformers builds (text states zeroed, chroma "no melody"), and
  ``worker.engine.sampling.draw`` mixes the halves with the task's own
  ``cfg_coef``. A test checks the audio equals that of transformers' own
  guided sampling seeded alike.
- **Batching.** The scheduler (``worker.engine.scheduler``) prefills each
  task's prefix into its own rows, so melody tasks batch, join and leave like
  plain ones; this class only supplies the prefix (``_conditioning``).
"""

from __future__ import annotations

import math

import numpy as np
import soxr
import torch
from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration
from transformers.audio_utils import chroma_filter_bank
from transformers.feature_extraction_utils import FeatureExtractionMixin

from worker.engine import MusicGenEngine, Plan
from worker.engine.musicgen import MAX_TEXT_TOKENS

__all__ = ["ChromaExtractor", "MelodyEngine"]


class ChromaExtractor:
    """``MusicgenMelodyFeatureExtractor``'s chroma, without torchaudio.

    Power spectrogram (periodic Hann window of ``n_fft``, centred frames with
    reflect padding, scaled by the window's energy, as torchaudio's
    ``Spectrogram(normalized=True)``), librosa's chroma filter bank, then per
    frame a one-hot of the strongest pitch class. Audio shorter than
    ``n_fft`` is zero-padded on both sides; longer than ``chunk_length``
    seconds is cut.
    """

    def __init__(self, *, sampling_rate: int = 32000, n_fft: int = 16384, hop_length: int = 4096,
                 num_chroma: int = 12, chunk_length: int = 30):
        self.sampling_rate = sampling_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_chroma = num_chroma
        self.max_samples = chunk_length * sampling_rate
        self.filters = torch.from_numpy(chroma_filter_bank(
            num_frequency_bins=n_fft, num_chroma=num_chroma, sampling_rate=sampling_rate, tuning=0,
        )).float()  # (num_chroma, n_fft // 2 + 1)
        self.window = torch.hann_window(n_fft)

    @classmethod
    def from_pretrained(cls, model_ref: str) -> "ChromaExtractor":
        """The checkpoint's feature extractor settings (processor_config.json or preprocessor_config.json)."""
        settings, _ = FeatureExtractionMixin.get_feature_extractor_dict(model_ref)
        names = ("sampling_rate", "n_fft", "hop_length", "num_chroma", "chunk_length")
        return cls(**{name: settings[name] for name in names if name in settings})

    def __call__(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor:
        """One-hot chroma ``(1, frames, num_chroma)`` float32 of ``audio`` (channels, samples)."""
        mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
        if sample_rate != self.sampling_rate:
            mono = soxr.resample(mono, sample_rate, self.sampling_rate).astype(np.float32)
        wave = torch.from_numpy(np.ascontiguousarray(mono[: self.max_samples]))
        if wave.shape[-1] < self.n_fft:
            missing = self.n_fft - wave.shape[-1]
            wave = torch.nn.functional.pad(wave, (missing // 2, missing - missing // 2))
        spectrum = torch.stft(wave, self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                              window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spectrum.abs().pow(2) / self.window.pow(2).sum()
        chroma = self.filters @ power  # (num_chroma, frames)
        strongest = chroma.argmax(dim=0)
        return torch.nn.functional.one_hot(strongest, self.num_chroma).float()[None]


class MelodyEngine(MusicGenEngine):
    """One MusicGen melody model, loaded once, continuing prompts (the ``MusicGenEngine`` interface)."""

    MODEL_CLASS = MusicgenMelodyForConditionalGeneration

    def __init__(self, model_ref: str, device: str = "auto", half_precision: bool = True,
                 cpu_threads: int = 0, **options):
        super().__init__(model_ref, device=device, half_precision=half_precision, cpu_threads=cpu_threads,
                         **options)
        self.num_chroma: int = int(self.model.config.num_chroma)
        self.chroma_length: int = int(self.model.config.chroma_length)

    def _load_preprocessing(self, model_ref: str) -> None:
        # Not AutoProcessor: MusicgenMelodyProcessor needs torchaudio (see ChromaExtractor).
        self.tokenizer = AutoTokenizer.from_pretrained(model_ref)
        self.chroma = ChromaExtractor.from_pretrained(model_ref)
        self.processor = None

    # -- conditioning ------------------------------------------------------

    def _encode_text(self, text: str) -> torch.Tensor:
        """Text states ``(tokens, decoder width)``: T5, then the projection when the widths differ."""
        tokens = self.tokenizer([text], return_tensors="pt", truncation=True,
                                max_length=MAX_TEXT_TOKENS).to(self._torch_device)
        states = self.model.text_encoder(**tokens).last_hidden_state
        if self.model.text_encoder.config.hidden_size != self.model.decoder.config.hidden_size:
            states = self.model.enc_to_dec_proj(states)
        return states[0]

    def _no_melody(self) -> torch.Tensor:
        # transformers' "null" chroma: one frame, one-hot on bin 0.
        chroma = torch.zeros((1, 1, self.num_chroma), device=self._torch_device, dtype=self._dtype)
        chroma[:, :, 0] = 1
        return chroma

    def _chroma_states(self, chroma: torch.Tensor) -> torch.Tensor:
        """Chroma ``(1, frames, num_chroma)`` -> decoder-width states tiled/cut to ``chroma_length`` frames."""
        states = chroma.to(self._torch_device, dtype=self._dtype)
        if self.num_chroma != self.model.decoder.config.hidden_size:
            states = self.model.audio_enc_to_dec_proj(states)
        repeats = math.ceil(self.chroma_length / states.shape[1])
        return states.repeat(1, repeats, 1)[:, : self.chroma_length]

    def _conditioning(self, plan: Plan) -> torch.Tensor:
        """The decoder's prefix ``(1 or 2, chroma_length + text tokens, width)``; 2 rows when guided."""
        request = plan.request
        text = self._encode_text(request.text or "")[None]
        melody = self.chroma(plan.prompt, self.sample_rate) if request.melody_conditioning else self._no_melody()
        rows = [torch.cat([self._chroma_states(melody), text], dim=1)]
        if plan.guided:
            rows.append(torch.cat([self._chroma_states(self._no_melody()), torch.zeros_like(text)], dim=1))
        return torch.cat(rows)

    def close(self) -> None:
        super().close()
        self.tokenizer = None
