"""Latency backends: every registered backend runs a block; a new runtime is one registration."""

import pytest
import torch

from nas.config_sections import ProfileSpec
from search_spaces import BlockSpec, InputError
from supernets import timing
from supernets.backends import (LATENCY_BACKENDS, LatencyBackend, get_latency_backend, int8_backends,
                                register_latency_backend)
from supernets.blocks import build_block

BLOCK = BlockSpec(op="mbconv", in_size=8, in_ch=8, out_ch=8, kernel=3, stride=1, mid_ch=16, se=False, act="relu",
                  shortcut="identity", w_bits=8, a_bits=8)


@pytest.mark.parametrize("name", LATENCY_BACKENDS.names())
def test_every_registered_backend_runs_a_block_inside_a_network(name):
    backend = get_latency_backend(name)
    assert backend.dtype in ("fp32", "int8") and backend.name == name
    assert timing.backend_dtype(name) == backend.dtype
    quantized = backend.dtype == "int8"
    torch.manual_seed(0)
    runner = timing.make_runner(build_block(BLOCK), name, (1, 8, 8, 8), quantized_input=quantized,
                                quantized_output=quantized, calib_batches=2)
    assert runner() is not None
    overhead = backend.overhead_backend or name
    assert overhead in LATENCY_BACKENDS


def test_int8_backends_are_the_integer_ones():
    assert set(int8_backends()) == {"torch-int8", "onnxruntime-int8"}


def test_a_new_backend_is_one_registration(monkeypatch):
    calls = []

    def make(model, input_shape, **options):
        calls.append((tuple(input_shape), options["threads"]))
        x = torch.zeros(*input_shape)
        return lambda: model(x)

    monkeypatch.setattr(LATENCY_BACKENDS, "_items", dict(LATENCY_BACKENDS._items))  # forget it after the test
    register_latency_backend(LatencyBackend("eager-half-fp32", "fp32", make))
    assert ProfileSpec(backend="eager-half-fp32").backend == "eager-half-fp32"  # the config accepts it
    runner = timing.make_runner(build_block(BLOCK), "eager-half-fp32", (1, 8, 8, 8), threads=3)
    assert runner().shape == (1, 8, 8, 8) and calls == [((1, 8, 8, 8), 3)]
    with pytest.raises(ValueError, match="already registered"):
        register_latency_backend(LatencyBackend("eager-half-fp32", "fp32", make))


def test_unknown_backends_name_the_nearest():
    with pytest.raises(InputError, match="did you mean 'onnxruntime-int8'"):
        timing.check_backend("onnxruntime-int")
    with pytest.raises(ValueError, match="did you mean 'torch-int8'"):
        ProfileSpec(backend="torch-int")
