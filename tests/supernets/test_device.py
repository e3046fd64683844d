"""Device placement: resolving a ``device:`` section against this machine, and what a Placement does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search_spaces import InputError
from supernets.device import CPU, Placement, placement_of, resolve_placement

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend one bf16-capable CUDA device exists (only resolution is exercised, nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@no_cuda
def test_auto_on_a_cpu_machine_is_todays_fp32_cpu():
    p = resolve_placement()
    assert p == CPU and p.precision == "fp32" and not p.channels_last and not p.compile
    t = torch.randn(2, 3, 4, 4)
    assert p.put(t) is t and p.layout(t) is t  # nothing to move, nothing copied
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert p.grad_scaler() is None


def test_bf16_on_cpu_autocasts():
    p = resolve_placement(type="cpu", precision="bf16")
    assert p.device == torch.device("cpu") and p.dtype == torch.bfloat16 and p.precision == "bf16"
    conv = nn.Conv2d(3, 4, 3)
    with p.autocast():
        assert conv(torch.randn(1, 3, 5, 5)).dtype == torch.bfloat16
    assert conv(torch.randn(1, 3, 5, 5)).dtype == torch.float32


def test_describe_names_device_and_versions():
    info = resolve_placement(type="cpu").describe()
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["torch"] == torch.__version__
    assert {"cuda", "cudnn", "name", "cpu", "cpu_threads", "channels_last", "compile"} <= set(info)


@pytest.mark.parametrize(("options", "field", "text"), [
    ({"type": "gpu"}, "device.type", "expected one of auto, cpu, cuda"),
    ({"type": 1}, "device.type", "got 1"),
    ({"precision": "half"}, "device.precision", "expected one of auto, fp32, bf16, fp16"),
    ({"type": "cpu", "precision": "fp16"}, "device.precision", "fp16 needs a CUDA device"),
    ({"type": "cpu", "index": 1}, "device.index", "the CPU device has only index 0"),
    ({"index": -1}, "device.index", "non-negative integer"),
    ({"index": True}, "device.index", "non-negative integer"),
    ({"compile": "yes"}, "device.compile", "expected true or false"),
])
def test_bad_settings_name_the_field(options, field, text):
    with pytest.raises(InputError) as err:
        resolve_placement(**options)
    assert err.value.field == field and text in str(err.value)


@no_cuda
def test_cuda_without_a_gpu_says_what_the_machine_has():
    with pytest.raises(InputError) as err:
        resolve_placement(type="cuda")
    assert err.value.field == "device.type"
    assert "this machine has no CUDA device" in str(err.value) and torch.__version__ in str(err.value)


def test_cuda_resolution_on_a_gpu_machine(fake_gpu):
    p = resolve_placement()
    assert p.device == torch.device("cuda", 0) and p.dtype == torch.bfloat16 and p.channels_last
    assert resolve_placement(type="cuda", precision="fp16").dtype == torch.float16
    assert resolve_placement(type="cuda", precision="fp32").dtype is None
    with pytest.raises(InputError) as err:
        resolve_placement(type="cuda", index=1)
    assert err.value.field == "device.index" and "1 CUDA device (cuda:0 Fake GPU)" in str(err.value)


def test_layout_is_channels_last_only_for_4d_tensors():
    p = Placement(torch.device("cpu"), channels_last=True)
    x = p.put(torch.randn(2, 3, 4, 5))
    assert x.is_contiguous(memory_format=torch.channels_last)
    y = torch.arange(4)
    assert p.put(y) is y
    conv = p.put_module(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    f = Placement(torch.device("cpu"), compile=True).maybe_compile(lambda x: x * 2)
    with pytest.warns(RuntimeWarning, match="torch.compile failed, running eagerly: RuntimeError: no compiler here"):
        assert f(torch.tensor(3.0)) == 6
    assert f(torch.tensor(4.0)) == 8  # stays eager without warning again
    plain = lambda x: x  # noqa: E731
    assert CPU.maybe_compile(plain) is plain


def test_placement_of_follows_the_module():
    assert placement_of(nn.Linear(2, 2)) == CPU
    assert placement_of(nn.ReLU()) == CPU  # no tensors at all


@needs_cuda
def test_real_cuda_placement():
    p = resolve_placement(type="cuda")
    x = p.put(torch.randn(2, 3, 8, 8))
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    assert p.describe()["name"] == torch.cuda.get_device_name(0)
    assert placement_of(nn.Linear(2, 2).cuda()).device.type == "cuda"
