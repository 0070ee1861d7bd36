"""pick_device on this machine (CUDA cases run only where CUDA exists)."""

from __future__ import annotations

import pytest
import torch

from worker.device import pick_device

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_cuda_when_available_else_cpu():
    device, dtype = pick_device("auto")
    if HAS_CUDA:
        assert device == torch.device("cuda", 0)
        assert dtype in (torch.bfloat16, torch.float16)
    else:
        assert device == torch.device("cpu")
        assert dtype == torch.float32


@pytest.mark.parametrize("half_precision", [True, False])
def test_cpu_is_always_float32(half_precision):
    assert pick_device("cpu", half_precision) == (torch.device("cpu"), torch.float32)


def test_setting_is_case_and_space_insensitive():
    assert pick_device(" CPU ")[0] == torch.device("cpu")


@pytest.mark.parametrize("setting", ["tpu", "gpu", "cuda:x", "mps"])
def test_unknown_devices_are_rejected(setting):
    with pytest.raises(ValueError):
        pick_device(setting)


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
@pytest.mark.parametrize("setting", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_requested_without_cuda_is_a_clear_error(setting):
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device(setting)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_half_precision_prefers_bfloat16():
    device, dtype = pick_device("cuda")
    assert device == torch.device("cuda", 0)
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert pick_device("cuda", half_precision=False)[1] == torch.float32
    with pytest.raises(ValueError, match="CUDA device"):
        pick_device(f"cuda:{torch.cuda.device_count()}")
