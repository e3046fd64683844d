"""ONNX Runtime INT8 export of CNN subnets with the activation steps their LSQ quantizers learned
(supernets.deploy.cnn_lsq_overrides, used by nas.export's int8 format)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from onnx import numpy_helper

from search_spaces import get_space
from search_spaces.testing import TINY_MBV3
from supernets.data import load_dataset
from supernets.deploy import cnn_lsq_overrides, ort_session, to_onnx, to_onnx_int8
from supernets.static import ConvBNAct, QuantLinear, strip_fake_quant
from supernets.supernet import QuantSupernet
from supernets.training import SupernetConfig, SupernetTrainer


@pytest.fixture(scope="module")
def trained():
    """(digits, evaluator of a tiny mbv3 supernet trained with QAT for a few seconds)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    digits = load_dataset("digits", max_train=512)
    space = get_space("mbv3", **TINY_MBV3)
    cfg = SupernetConfig(warmup_epochs=1, epochs=2, qat_start=0, batch_size=64, lr=0.1, bn_calib_samples=128,
                         random_subnets=1)
    trainer = SupernetTrainer(QuantSupernet(space, image_size=8), digits.train_x, digits.train_y, digits.val_x,
                              digits.val_y, cfg)
    for _ in range(trainer.total_epochs):
        trainer.train_epoch()
    return digits, trainer.evaluator()


def _graph(model, calib):
    return to_onnx(strip_fake_quant(copy.deepcopy(model)).eval(), calib[0][:1], dynamic_batch=True)


def _quants(model):
    return [m.quant for m in model.modules() if isinstance(m, (ConvBNAct, QuantLinear))]


def _layer_input_scales(int8) -> list[float]:
    """Scale of each Conv/Gemm input in a QDQ graph, in graph order (its DequantizeLinear's scale)."""
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    producers = {o: n for n in int8.graph.node for o in n.output}
    layers = [n for n in int8.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")
              and producers[n.input[1]].input[0] in inits]  # a weight: its DequantizeLinear reads stored int8
    return [float(inits[producers[n.input[0]].input[1]]) for n in layers]


def test_w8a8_subnet_matches_every_layer_and_uses_the_learned_steps(trained, tmp_path):
    """The tiny space's largest subnet (W8A8, SE blocks, hswish, residuals) matches layer for layer: every
    conv (BN folded), SE conv and the classifier gets its LSQ step and zero point, none falls back to
    calibration; nas.export writes that graph."""
    from nas.export import _int8_models

    digits, ev = trained
    genome = ev.supernet.space.largest()
    assert {(s.w_bits, s.a_bits) for s in ev.supernet.specs(genome)} == {(8, 8)}
    assert any(s.se for s in ev.supernet.specs(genome)) and any(s.act == "hswish" for s in ev.supernet.specs(genome))
    model = ev.extract(genome)
    calib = [digits.train_x[i:i + 64] for i in range(0, 256, 64)]
    graph = _graph(model, calib)
    overrides = cnn_lsq_overrides(model, graph, calib[0])
    quants = _quants(model)
    # every layer's input (no fallback, no tensor read by two layers here), and the pooled features the
    # classifier's Flatten reads (ORT quantizes a Flatten's output as its input)
    assert len(quants) == 19 and len(overrides) == 20
    assert sorted(float(o[0]["scale"]) for o in overrides.values()) == pytest.approx(
        sorted(float(q.scale) for q in [*quants, quants[-1]]), rel=1e-6)
    assert overrides["x"][0]["zero_point"] == round(float(quants[0].zero_point)) - quants[0].qmin  # the stem
    info: dict = {}
    _int8_models(model, calib, tmp_path, info)
    assert info["onnxruntime_learned_steps"] == len(overrides)  # what export.json records
    import onnx

    written = _layer_input_scales(onnx.load(str(tmp_path / "model_int8.onnx")))
    assert written == pytest.approx([float(q.scale) for q in quants], rel=1e-6)  # forward order = graph order


def test_int8_with_learned_steps_is_closer_to_fake_quant_than_minmax(trained):
    """Mirrors the transformer test: with steps that clip (halved, as trained ones do), the INT8 graph clips and
    rounds as the fake-quantized model does, closer to it than MinMax-calibrated ranges and the float graph."""
    digits, ev = trained
    model = ev.extract(ev.supernet.space.largest())
    calib = [digits.train_x[i:i + 64] for i in range(0, 256, 64)]
    graph = _graph(model, calib)
    x = digits.val_x

    def errors(model):
        lsq = to_onnx_int8(graph, [c.numpy() for c in calib], overrides=cnn_lsq_overrides(model, graph, calib[0]))
        minmax = to_onnx_int8(graph, [c.numpy() for c in calib])
        with torch.no_grad():
            fake = model(x).numpy()
        outs = {name: ort_session(g).run(None, {"x": x.numpy()})[0]
                for name, g in (("lsq", lsq), ("minmax", minmax), ("float", graph))}
        return ({name: np.abs(out - fake).mean() for name, out in outs.items()},
                {name: (out.argmax(1) == fake.argmax(1)).mean() for name, out in outs.items()})

    error, _ = errors(model)  # the steps as trained (a few seconds: they clip little, the classifier's most)
    assert error["lsq"] < error["minmax"], error
    for q in _quants(model):
        q.scale.mul_(0.5)
    error, agree = errors(model)
    assert error["lsq"] < error["minmax"] and error["lsq"] < error["float"], error
    assert agree["lsq"] > agree["minmax"], agree


def test_falls_back_to_calibration_where_layers_do_not_match(trained):
    """A graph of another subnet (other layer count or weight shapes) gets no overrides at all; in a subnet with
    A4 blocks only the 8-bit quantizers (first and last layers here) give one (such subnets are not exported to
    INT8 anyway: int8_blockers)."""
    digits, ev = trained
    space = ev.supernet.space
    calib = [digits.train_x[:64]]
    largest, smallest = ev.extract(space.largest()), ev.extract(space.smallest())
    assert cnn_lsq_overrides(largest, _graph(smallest, calib), calib[0]) == {}
    assert cnn_lsq_overrides(smallest, _graph(largest, calib), calib[0]) == {}
    assert (4, 4) in {(s.w_bits, s.a_bits) for s in ev.supernet.specs(space.smallest())}
    overrides = cnn_lsq_overrides(smallest, _graph(smallest, calib), calib[0])
    scales = {float(o[0]["scale"]) for o in overrides.values()}
    eight = {float(q.scale) for q in _quants(smallest) if q.bits == 8}
    assert overrides and scales == eight and len(eight) < len(_quants(smallest))
