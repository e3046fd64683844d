"""Transformer latency on any registered backend: a backend that declares ``make_transformer_runner`` in its
registration profiles transformer blocks with no qnas file edited; one that does not is refused, naming it and
listing the ones that do; the backend lists are read when asked, not snapshots taken at import."""

from __future__ import annotations

import pytest
import torch

from nas import transformer_latency
from nas.transformer_latency import check_transformer_backend, measure_transformer_blocks, profile_transformer_space
from nas.transformer_latency_template import hint_backend
from predictors.latency.transformer_table import (TransformerLatencyPredictor, distinct_transformer_blocks,
                                                  transformer_bits_measured_as)
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LATENCY
from supernets import timing
from supernets.backends import LATENCY_BACKENDS, LatencyBackend, register_latency_backend, transformer_backends

TINY = TINY_TRANSFORMER_LATENCY
FAST = dict(runs=4, passes=2, warmup=1)
NAME = "torch-fp32-transformer"


def _eager(model, input_shape, **options):  # the CNN runner: the per-call overhead is timed with it
    x = torch.randn(*input_shape)
    return lambda: model(x)


@pytest.fixture()
def eager_backend(monkeypatch):
    """A throwaway backend timing the eager float module (forgotten after the test); its runner calls recorded."""
    calls = []

    def transformer_runner(model, calib, *, threads=1, **options):
        calls.append((model, calib[0], threads))
        return lambda: model(calib[0])

    monkeypatch.setattr(LATENCY_BACKENDS, "_items", dict(LATENCY_BACKENDS._items))
    register_latency_backend(LatencyBackend(NAME, "fp32", _eager, make_transformer_runner=transformer_runner))
    return calls


def test_a_registered_transformer_backend_profiles_a_space(eager_backend):
    space = get_space("transformer", **TINY)
    assert NAME in transformer_backends() and NAME in transformer_latency.TRANSFORMER_BACKENDS
    assert NAME in timing.BACKENDS  # read when asked: registered after supernets.timing loaded
    table = profile_transformer_space(space, NAME, n_calibration=2, **FAST)
    h = table.header
    blocks = distinct_transformer_blocks(space, transformer_bits_measured_as(space, "fp32"))
    assert h.backend == NAME and h.dtype == "fp32" and h.bits_measured_as == {4: 32, 8: 32}
    assert len(table) == len(blocks) and table.missing(space) == []
    assert all(e.mean_ms >= 0 and e.count == FAST["runs"] for e in table.entries.values())
    assert h.calibration_subnets == 2 and h.calibration_scale > 0
    assert f"each its own model as {NAME} runs it" in h.notes
    assert TransformerLatencyPredictor(table, space).predict(space.largest()).ms > 0
    # the runner got the eager float modules (no ONNX anywhere) and the protocol's threads: blocks, then subnets
    assert len(eager_backend) == len(blocks) + 2
    assert all(isinstance(m, torch.nn.Module) and not m.training and threads == 1 for m, _, threads in eager_backend)
    tokens = eager_backend[0][1]
    assert tokens.dtype == torch.int64 and tuple(tokens.shape) == (1, 8)  # the lm embedding reads token ids


def test_blocks_are_measured_on_it_with_the_protocol(eager_backend):
    space = get_space("transformer", **TINY)
    blocks = distinct_transformer_blocks(space, transformer_bits_measured_as(space, "fp32"))[:3]
    timings = measure_transformer_blocks(blocks, space, NAME, protocol=timing.Protocol(threads=1, runs=4, passes=2,
                                                                                       warmup=1))
    assert len(timings) == 3 and all(t.mean_ms > 0 and len(t.pass_ms) == 2 for t in timings)


def test_a_backend_without_transformer_support_is_refused(eager_backend):
    register_latency_backend(LatencyBackend("cnn-only-fp32", "fp32", _eager))
    space = get_space("transformer", **TINY)
    listed = "onnxruntime-int8, onnxruntime-fp32 or torch-fp32-transformer"
    for name in ("cnn-only-fp32", "torch-int8", "torch-fp32"):
        assert name not in transformer_latency.TRANSFORMER_BACKENDS
        with pytest.raises(InputError, match=f"backend: transformer blocks are timed on {listed}, not '{name}' "
                                             r"\(its registration declares no make_transformer_runner\)"):
            profile_transformer_space(space, name, n_calibration=0, **FAST)
    with pytest.raises(InputError, match=r"--backend: .*, not 'acme-npu' \(no such backend\)"):
        check_transformer_backend("acme-npu", field="--backend")


def test_templates_still_write_the_onnx_backends_graphs(eager_backend):
    """A float backend that times no ONNX graph does not take over ``--backend-hint fp32``."""
    assert hint_backend("fp32").name == "onnxruntime-fp32" and hint_backend("fp32").onnx_quantization == "float"
    assert hint_backend("int8").name == "onnxruntime-int8" and hint_backend("int8").onnx_quantization == "qdq-int8"


def test_without_a_plugin_the_lists_are_the_built_in_ones():
    assert transformer_latency.TRANSFORMER_BACKENDS == ("onnxruntime-int8", "onnxruntime-fp32")
    assert timing.BACKENDS == ("torch-fp32", "torch-int8", "onnxruntime-fp32", "onnxruntime-int8")
    with pytest.raises(AttributeError):
        transformer_latency.NO_SUCH_NAME  # noqa: B018
