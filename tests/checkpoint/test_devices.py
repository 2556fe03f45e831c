"""--device (uptrain eval and uptrain convert share it) and the calibration compute dtype: how auto
resolves, and the one-line errors, on machines with and without GPUs (torch.cuda patched: nothing
here uses a GPU)."""

import pytest
import torch

from uptrain.checkpoint.devices import device_name, resolve_compute_dtype, resolve_device
from uptrain.errors import SettingError, as_flag


@pytest.fixture
def gpus(monkeypatch):
    """gpus(n): make this machine look as if it had n CUDA devices."""

    def have(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    return have


@pytest.mark.parametrize("setting", [None, "auto"])
def test_auto_is_the_first_gpu_when_there_is_one_else_cpu(gpus, setting):
    gpus(0)
    assert resolve_device(setting) == torch.device("cpu")
    gpus(2)
    assert resolve_device(setting) == torch.device("cuda", 0)


def test_named_devices(gpus):
    gpus(2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)  # the current device, written with its index
    assert device_name(resolve_device("cuda:1")) == "cuda:1" and device_name(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize(
    "count, setting, said",
    [
        (0, "cuda", "--device cuda: this machine has no CUDA GPU; use --device cpu"),
        (0, "cuda:0", "--device cuda:0: this machine has no CUDA GPU; use --device cpu"),
        (2, "cuda:2", "--device cuda:2: this machine has 2 GPUs; use cuda:0 ... cuda:1"),
        (0, "tpu", "--device 'tpu' is not a torch device; use auto, cpu, cuda or cuda:N"),
    ],
)
def test_devices_this_machine_lacks_are_one_line_errors(gpus, count, setting, said):
    gpus(count)
    with pytest.raises(SettingError) as error:
        resolve_device(setting)
    assert error.value.said(as_flag) == said


def test_compute_dtype_auto_is_bf16_on_a_gpu_and_fp32_on_the_cpu():
    assert resolve_compute_dtype("auto", torch.device("cpu")) == "fp32"
    assert resolve_compute_dtype("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_compute_dtype("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(SettingError) as error:
        resolve_compute_dtype("int8", torch.device("cpu"))
    assert error.value.said(as_flag) == "--calibration-dtype 'int8' is not one of auto, fp32, bf16, fp16"
