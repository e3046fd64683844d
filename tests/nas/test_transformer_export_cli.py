"""Exporting transformer subnets from a run: torch and ONNX files, the ONNX Runtime INT8 model checked by loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.export import export_subnet, int8_blockers
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LM
from supernets.evaluate import SubnetEvaluator
from supernets.transformer import TransformerSupernet


@pytest.fixture(scope="module")
def subnets():
    space = get_space("transformer", **TINY_TRANSFORMER_LM)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 11, (32, 12), generator=gen)
    y = torch.roll(x, -1, dims=1)
    net = TransformerSupernet(space)
    net.init_quantizers(x[:8])
    return SubnetEvaluator(net.eval(), x[:8], x, y, batch_size=16), x, y


def test_a_w8a8_transformer_exports_to_int8_with_its_loss_checked(subnets, tmp_path):
    evaluator, x, y = subnets
    space = evaluator.supernet.space
    genome = space.largest().with_values({g.name: 8 for g in space.genes if g.name.endswith("w_bits")})
    out = export_subnet(evaluator, genome, tmp_path, ["torch", "onnx", "int8"], calib=x, eval_x=x, eval_y=y,
                        batch_size=16)
    assert out["files"] == ["model.pt2", "model.onnx", "model_int8.onnx"]
    assert all((tmp_path / f).stat().st_size > 0 for f in out["files"])
    assert abs(out["loss_onnxruntime-int8"] - out["loss_fake_quant"]) < 0.05
    assert out["loss_fake_quant"] == pytest.approx(evaluator.measure(genome)["val_loss"], rel=1e-5)
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    with torch.no_grad():
        assert torch.allclose(program(x[:3]), evaluator.extract(genome)(x[:3]), atol=1e-5)


def test_a_w4_transformer_is_refused_naming_the_linear(subnets, tmp_path):
    evaluator, x, y = subnets
    space = evaluator.supernet.space
    genome = space.largest().with_values({"l2.fc1.w_bits": 4})
    assert int8_blockers(evaluator.supernet.specs(genome)) == ["l2.mlp.fc1 is W4A8"]
    with pytest.raises(InputError, match="l2.mlp.fc1 is W4A8"):
        export_subnet(evaluator, genome, tmp_path, ["int8"], calib=x, eval_x=x, eval_y=y)
    assert not any(tmp_path.iterdir())
    rng = np.random.default_rng(0)
    assert all(isinstance(b, str) for b in int8_blockers(evaluator.supernet.specs(space.sample(rng))))
