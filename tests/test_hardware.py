"""The skip-or-fail rule of the gpu and tensorrt markers (tests/hardware.py, applied in conftest.py)."""

from __future__ import annotations

import pytest
from hardware import BrokenSetup, gpu_skip_reason, tensorrt_skip_reason

from autoprune.errors import ConfigError

GPU = {"cuda_build": "13.0", "torch_version": "2.9.0+cu130"}


def test_gpu_tests_skip_without_a_gpu_and_fail_when_torch_cannot_use_one() -> None:
    assert gpu_skip_reason(cuda_available=True, driver=None, **GPU) is None
    assert "CPU build" in str(
        gpu_skip_reason(cuda_available=False, driver="580.1", cuda_build=None, torch_version="2.9.0")
    )
    assert "no NVIDIA GPU" in str(gpu_skip_reason(cuda_available=False, driver=None, **GPU))
    with pytest.raises(BrokenSetup, match=r"driver 580\.1 is here .* sees no CUDA device"):
        gpu_skip_reason(cuda_available=False, driver="580.1", **GPU)


def test_tensorrt_tests_skip_only_when_the_package_is_absent() -> None:
    def broken() -> None:  # what require_tensorrt raises when libnvinfer cannot load, or for TensorRT 8
        raise ConfigError("TensorRT is not installed: pip install 'autoprune[tensorrt]'")

    assert tensorrt_skip_reason(gpu_reason="no NVIDIA GPU", installed=True, load=broken) == "no NVIDIA GPU"
    assert "not installed" in str(tensorrt_skip_reason(gpu_reason=None, installed=False, load=broken))
    assert tensorrt_skip_reason(gpu_reason=None, installed=True, load=lambda: object()) is None
    with pytest.raises(BrokenSetup, match="installed but unusable"):
        tensorrt_skip_reason(gpu_reason=None, installed=True, load=broken)
