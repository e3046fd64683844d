"""Tests for supernets.transformer.export: float/fake-quant ONNX, ORT INT8, W8A8 check, ORT evaluation and timing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LM, TINY_TRANSFORMER_VIT
from supernets.deploy import ort_session
from supernets.static import strip_fake_quant
from supernets.transformer import TransformerSupernet
from supernets.transformer.export import (check_w8a8, evaluate_onnx, ort_latencies_ms, ort_latency_ms,
                                          quantized_nodes, transformer_onnx, transformer_ort_int8, w8a8_blockers)

SPACES = {"lm": TINY_TRANSFORMER_LM, "vit": TINY_TRANSFORMER_VIT}


def _inputs(space, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if space.front == "lm":
        return torch.randint(0, space.vocab_size, (batch, space.seq_len), generator=gen)
    return torch.randn(batch, space.in_channels, space.image_size, space.image_size, generator=gen)


def _targets(space, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, space.seq_len) if space.front == "lm" else (batch,)
    return torch.randint(0, space.classes, shape, generator=gen)


@pytest.fixture(scope="module", params=sorted(SPACES))
def setup(request):
    """(space, supernet with initialised quantizers in eval mode, the largest W8A8 subnet extracted)."""
    torch.manual_seed(0)
    space = get_space("transformer", **SPACES[request.param])
    net = TransformerSupernet(space)
    net.init_quantizers(_inputs(space, 16, 0))
    net.eval()
    return space, net, net.extract(space.largest())


def _w4(space):
    return space.largest().with_values({"l1.qkv.w_bits": 4})


def _torch_out(model, x):
    with torch.no_grad():
        return model(x).numpy()


def test_float_onnx_matches_torch_at_another_batch(setup):
    space, _, model = setup
    proto = transformer_onnx(model, _inputs(space, 2, 1))
    assert [i.name for i in proto.graph.input] == ["x"]
    float_model = strip_fake_quant(copy.deepcopy(model))
    assert all(type(b.qkv.quant).__name__ == "FrozenFakeQuant" for b in model.blocks if hasattr(b, "qkv"))  # untouched
    x = _inputs(space, 5, 2)  # a batch size the export never saw
    out = ort_session(proto).run(None, {"x": x.numpy()})[0]
    want = _torch_out(float_model, x)
    assert out.shape == want.shape == ((5, space.vocab_size, space.seq_len) if space.front == "lm" else (5, 10))
    np.testing.assert_allclose(out, want, atol=1e-4, rtol=0)


def test_fake_quant_onnx_matches_the_w4_subnet(setup):
    space, net, _ = setup
    model = net.extract(_w4(space))
    proto = transformer_onnx(model, _inputs(space, 1, 1), fake_quant=True)
    assert any(n.op_type == "Round" for n in proto.graph.node)
    x = _inputs(space, 3, 3)
    out = ort_session(proto).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, _torch_out(model, x), atol=1e-4, rtol=0)


def test_int8_quantizes_matmuls_and_token_table_and_stays_close_to_float(setup):
    space, _, model = setup
    int8 = transformer_ort_int8(model, [_inputs(space, 16, 10 + i) for i in range(4)])
    ops = quantized_nodes(int8)
    matmuls = [n for n in int8.graph.node if n.op_type in ("MatMul", "Gemm")]  # Gemm: the vit classifier
    attention_blocks = sum(b.op == "attention" for b in model.specs)
    linears = sum(len(b.bits) for b in model.specs) - (space.front == "lm")  # the lm table is a lookup
    assert len(matmuls) == linears + 2 * attention_blocks  # every linear, and scores and weighted sum
    producers = {o: n for n in int8.graph.node for o in n.output}
    for node in matmuls:  # both operands of every matmul come out of DequantizeLinear: integer kernels
        assert all(producers[i].op_type == "DequantizeLinear" for i in node.input[:2]), node.name
    # bias adds read requantized matmul outputs; LayerNorm, GELU (Div/Erf/Mul) and the causal mask stay float
    assert {op for op, _ in ops} <= {"MatMul", "Gemm", "Gather", "Add", "Transpose", "Reshape", "Softmax"}
    def source(tensor):  # the op behind a Q/DQ pair
        node = producers[tensor]
        return source(node.input[0]) if node.op_type in ("QuantizeLinear", "DequantizeLinear") else node.op_type

    nodes = {n.name: n for n in int8.graph.node}
    for name in (name for op, name in ops if op == "Add"):  # bias adds, and the token lookup + positions
        assert any(i in producers and source(i) in ("MatMul", "Gather") for i in nodes[name].input), name
    if space.front == "lm":  # the token table is stored 8-bit (uint8, one scale: ORT treats it as an activation)
        inits = {i.name: i for i in int8.graph.initializer}
        table = next(n for n in int8.graph.node if n.op_type == "Gather" and "tokens" in n.name)
        dq = producers[table.input[0]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == 2  # UINT8
        assert list(inits[dq.input[1]].dims) == []

    x, y = _inputs(space, 64, 4), _targets(space, 64, 5)
    float_out = ort_session(transformer_onnx(model, x[:2])).run(None, {"x": x.numpy()})[0]
    int8_out = ort_session(int8).run(None, {"x": x.numpy()})[0]
    agree = float((int8_out.argmax(1) == float_out.argmax(1)).mean())
    assert agree >= 0.9, agree
    assert np.abs(int8_out - float_out).mean() < 0.05
    gap = abs(evaluate_onnx(int8, x, y, batch_size=32)["loss"] - evaluate_onnx(transformer_onnx(model, x[:2]), x, y,
                                                                               batch_size=32)["loss"])
    assert gap < 0.02, gap


def test_check_w8a8_refuses_w4_and_names_the_slot(setup):
    space, net, model = setup
    check_w8a8(model.specs)  # W8A8 throughout (the lm token table's a_bits 32 means "no activations")
    w4 = net.extract(_w4(space))
    with pytest.raises(InputError, match=r"l1\.attn\.qkv is W4A8") as err:
        check_w8a8(w4.specs)
    assert err.value.field == "--format"
    with pytest.raises(InputError, match=r"l1\.attn\.qkv is W4A8"):
        transformer_ort_int8(w4, [_inputs(space, 4, 0)])
    assert transformer_ort_int8(w4, [_inputs(space, 4, 0)], strict=False) is not None  # PTQ on request


def test_w8a8_blockers_cover_first_last_bits_and_activations():
    space = get_space("transformer", **{**TINY_TRANSFORMER_LM, "a_bits": [4, 8]}, first_last_bits=4)
    genome = space.largest().with_values({"l2.fc2.a_bits": 4})
    assert w8a8_blockers(space.transformer_blocks(genome)) == ["embed is W4", "l2.mlp.fc2 is W8A4", "head is W4A4"]


def test_evaluate_onnx_matches_torch_cross_entropy(setup):
    space, _, model = setup
    x, y = _inputs(space, 20, 6), _targets(space, 20, 7)
    result = evaluate_onnx(transformer_onnx(model, x[:2]), x, y, batch_size=8)  # last batch is partial
    with torch.no_grad():
        logits = strip_fake_quant(copy.deepcopy(model))(x)
    assert result["targets"] == y.numel()
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-4)
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()), abs=1.5 / y.numel())


def test_ort_latency(setup):
    space, _, model = setup
    x = _inputs(space, 4, 8)
    proto = transformer_onnx(model, x[:2])
    assert ort_latency_ms(proto, x, runs=4, passes=2) > 0
    timings = ort_latencies_ms([proto, transformer_ort_int8(model, [x])], x, runs=4, passes=2)
    assert len(timings) == 2 and all(t > 0 for t in timings)


def test_int8_activations_use_the_learned_lsq_steps(setup):
    """Each linear's input is quantized with its LSQ step and zero point, not a recalibrated range: the INT8
    graph then clips and rounds as the fake-quantized model does, closer to it than the float graph (which has
    no activation quantization at all) and than MinMax-calibrated ranges."""
    from onnx import numpy_helper

    from supernets.deploy import to_onnx_int8
    from supernets.static import QuantLinear
    from supernets.transformer.export import ORT_INT8_OPS

    space, _, model = setup
    model = copy.deepcopy(model)
    quants = [m.quant for m in model.modules() if isinstance(m, QuantLinear)]
    for q in quants:  # steps that clip, as trained ones do
        q.scale.mul_(0.5)
    calib = [_inputs(space, 16, 10 + i) for i in range(4)]
    int8 = transformer_ort_int8(model, calib)
    inits = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    producers = {o: n for n in int8.graph.node for o in n.output}
    linears = [n for n in int8.graph.node if n.op_type in ("MatMul", "Gemm")
               and producers[n.input[1]].input[0] in inits]  # a weight: its DequantizeLinear reads stored int8
    scales = sorted(float(inits[producers[n.input[0]].input[1]]) for n in linears)
    assert np.allclose(scales, sorted(float(q.scale) for q in quants), rtol=1e-6)
    x = _inputs(space, 64, 4)
    fake = _torch_out(model, x)
    proto = transformer_onnx(model, x[:2])
    minmax = to_onnx_int8(proto, [c.numpy() for c in calib], op_types=ORT_INT8_OPS)
    error = {name: np.abs(ort_session(g).run(None, {"x": x.numpy()})[0] - fake).mean()
             for name, g in (("lsq", int8), ("minmax", minmax), ("float", proto))}
    assert error["lsq"] < error["minmax"] and error["lsq"] < error["float"], error
