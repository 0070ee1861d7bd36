"""Which torch device and dtype the worker runs models on."""

from __future__ import annotations

import torch


def pick_device(setting: str = "auto", half_precision: bool = True) -> tuple[torch.device, torch.dtype]:
    """Resolve ``SEGUE_DEVICE`` ("auto", "cpu", "cuda", "cuda:N") to a device and dtype.

    An explicit CUDA request fails loudly instead of falling back to CPU: a GPU
    worker silently running on CPU would be ~50x slower and look like a hang.
    """
    requested = (setting or "auto").strip().lower()
    if requested == "auto":
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {setting!r}: use auto, cpu, cuda or cuda:N") from exc
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {setting!r} requested but CUDA is not available on this machine")
            index = 0 if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise ValueError(f"device {setting!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise ValueError(f"unsupported device {setting!r}: use auto, cpu, cuda or cuda:N")

    if device.type == "cuda" and half_precision:
        # bfloat16 keeps float32's exponent range, so T5 and EnCodec activations
        # cannot overflow to inf as they can in float16; float16 only for GPUs
        # without bf16 (pre-Ampere).
        with torch.cuda.device(device):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        # Half precision on CPU is slower than float32, not faster.
        dtype = torch.float32
    return device, dtype
