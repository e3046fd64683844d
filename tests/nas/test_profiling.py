"""Profiling: a tiny space gives a table with every distinct block, resumes without re-measuring, and the
deployed blocks have the boundary dtypes they have inside a whole network. No assertion on timings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.latency_cli import main as latency_main
from nas.profiling import cached_table, distinct_blocks, measure_subnet, profile_space, recalibrate
from predictors.latency import LatencyPredictor, LatencyTable
from search_spaces import BlockSpec, get_space
from supernets import deploy, timing
from supernets.blocks import build_block

TINY = dict(image_size=8, stem_channels=8, stage_channels=[16], stage_strides=[2], stage_se=[True],
            stage_act=["hswish"], depths=[1, 2], kernels=[3, 5], expands=[3], head_channels=16)
FAST = dict(runs=2, passes=2, warmup=1, n_calibration=2, progress=False)


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3", **TINY)


@pytest.mark.parametrize("backend", ["torch-fp32", "onnxruntime-int8"])
def test_profile_covers_every_distinct_block(tmp_path, space, backend):
    table = profile_space(space, backend, out_path=tmp_path / "t.csv", **FAST)
    blocks, mapping = distinct_blocks(space, backend)
    assert set(table.entries) == {b.key() for b in blocks} and len(blocks) == 6
    assert all(e.count == 2 and e.mean_ms > 0 for e in table.entries.values())
    assert mapping == ({4: 8, 6: 8} if backend.endswith("int8") else {4: 32, 6: 32, 8: 32})
    rng = np.random.default_rng(0)
    for genome in [space.sample(rng) for _ in range(30)]:
        assert all(table.get(b) is not None for b in space.blocks(genome))
    loaded = LatencyTable.load(tmp_path / "t.csv", space=space)
    assert loaded.header.backend == backend and loaded.header.calibration_subnets == 2
    assert loaded.header.dtype == backend.rsplit("-", 1)[1] and "profiled on this machine" in loaded.header.notes
    assert not (tmp_path / "t.csv.partial.jsonl").exists()
    assert LatencyPredictor(loaded, strict=True).predict(space.blocks(space.largest())).ms > 0
    again = recalibrate(loaded, space, n_calibration=3, runs=2, passes=2, warmup=1)
    assert again.header.calibration_subnets == 3 and again.entries == loaded.entries


def test_cached_table_is_reused_and_its_calibration_refreshed_on_request(tmp_path, space):
    cache = tmp_path / "cache"
    first = cached_table(space, "torch-fp32", cache_dir=cache, progress=False, runs=2, passes=2)
    (path,) = cache.glob("*.csv")
    stale = first.with_header(calibration_scale=7.0, calibration_offset_ms=0.0)  # a machine that was 7x slower
    stale.save(path)
    kept = cached_table(space, "torch-fp32", cache_dir=cache, progress=False, runs=2, passes=2)
    assert kept.header.calibration_scale == 7.0 and kept.entries == first.entries  # loaded, not re-profiled
    fresh = cached_table(space, "torch-fp32", cache_dir=cache, progress=False, runs=2, passes=2,
                         refresh_calibration=True)
    assert fresh.entries == first.entries and fresh.header.calibration_scale < 3.0
    assert LatencyTable.load(path, space=space).header.calibration_scale == 7.0  # the cache file is left as it was


def test_resume_does_not_remeasure_finished_blocks(tmp_path, space):
    measured: list[list[str]] = []

    def interrupted(specs, backend, **kwargs):
        if measured:
            raise KeyboardInterrupt
        measured.append([s.key() for s in specs])
        return timing.measure_blocks(specs, backend, **kwargs)

    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        profile_space(space, "torch-fp32", out_path=out, chunk_size=2, measure_blocks=interrupted, **FAST)
    assert (tmp_path / "t.json.partial.jsonl").exists() and not out.exists()
    first = set(measured[0])

    def recording(specs, backend, **kwargs):
        measured.append([s.key() for s in specs])
        return timing.measure_blocks(specs, backend, **kwargs)

    table = profile_space(space, "torch-fp32", out_path=out, chunk_size=2, measure_blocks=recording, **FAST)
    later = {k for chunk in measured[1:] for k in chunk}
    assert first.isdisjoint(later) and first | later == set(table.entries) and len(first) == 2
    assert LatencyTable.load(out).entries.keys() == table.entries.keys()


def test_torch_int8_block_takes_and_returns_quantized_tensors():
    spec = BlockSpec("mbconv", 8, 16, 16, kernel=3, mid_ch=48, se=True, act="hswish", shortcut="identity")
    torch.manual_seed(0)
    calib = [torch.randn(1, 16, 8, 8) for _ in range(2)]  # (B, C, H, W)
    qmodel = deploy.to_torch_int8(build_block(spec), calib, quantized_input=True, quantized_output=True)
    x = torch.quantize_per_tensor(calib[0], 0.05, 128, torch.quint8)
    y = qmodel(x)
    assert y.is_quantized and y.shape == (1, 16, 8, 8)


@pytest.mark.parametrize("op, uint8_in, uint8_out", [("mbconv", True, True), ("conv", False, True),
                                                     ("head", True, False)])
def test_ort_int8_block_graph_reads_and_writes_uint8(tmp_path, op, uint8_in, uint8_out):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto

    spec = {"mbconv": BlockSpec("mbconv", 8, 16, 24, kernel=3, mid_ch=48, act="relu"),
            "conv": BlockSpec("conv", 8, 3, 16, kernel=3, act="hswish"),
            "head": BlockSpec("head", 4, 16, 10, mid_ch=32, act="hswish")}[op]
    qin, qout = deploy.block_io(spec)
    assert (qin, qout) == (uint8_in, uint8_out)
    x = torch.randn(1, spec.in_ch, spec.in_size, spec.in_size)  # (B, C, H, W)
    proto = deploy.to_onnx_int8(deploy.to_onnx(build_block(spec).eval(), x), [x.numpy()])
    proto = deploy.strip_edge_qdq(proto, strip_input=qin, strip_output=qout)
    dtype = {True: TensorProto.UINT8, False: TensorProto.FLOAT}
    assert proto.graph.input[0].type.tensor_type.elem_type == dtype[uint8_in]
    assert proto.graph.output[0].type.tensor_type.elem_type == dtype[uint8_out]
    assert sum(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in proto.graph.node) == (0 if qin else 1)
    feed = np.zeros((1, spec.in_size, spec.in_size, spec.in_ch), np.uint8) if qin else x.numpy()  # NHWC when uint8
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    (y,) = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": feed})
    assert y.dtype == (np.uint8 if uint8_out else np.float32)
    if op == "mbconv":  # uint8 NHWC edges: ORT's layout Transposes cancel, every conv runs as QLinearConv
        assert y.shape == (1, 8, 8, 24)
        ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
        assert "Transpose" not in ops and ops.count("QLinearConv") == 3


def test_measure_subnet_and_cli(tmp_path, space, capsys):
    timing = measure_subnet(space, space.smallest(), "onnxruntime-fp32", runs=2, passes=2, warmup=1)
    assert timing.count == 2 and len(timing.pass_ms) == 2
    out = tmp_path / "cli.csv"
    options = '{"image_size": 8, "stem_channels": 8, "stage_channels": [16], "stage_strides": [2], ' \
              '"stage_se": [true], "stage_act": ["hswish"], "depths": [1, 2], "kernels": [3, 5], ' \
              '"expands": [3], "head_channels": 16}'
    args = ["latency", "profile", "--space", "mbv3", "--space-options", options, "--backend", "torch-int8",
            "--out", str(out), "--runs", "2", "--passes", "2", "--calibration", "2", "--no-progress"]
    assert latency_main(args) == 0 and "6 blocks" in capsys.readouterr().out
    assert latency_main(["latency", "check", str(out), "--space", "mbv3", "--space-options", options]) == 0
    assert latency_main(["latency", "check", str(out), "--space", "mbv3"]) == 2
    assert "space_fingerprint" in capsys.readouterr().err
