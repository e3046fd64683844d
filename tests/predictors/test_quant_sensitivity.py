"""The quantization-sensitivity table: scoring, files, bad input, and the feature it gives predictors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictors.accuracy import (FeatureEncoder, QuantSensitivity, TransferPredictor, make_predictor,
                                 ranking_metrics)
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES


def tiny_space(**extra):
    # three bit-widths per quantizer and depths up to 3: the tables below name 6-bit choices and depth 3
    return get_space("mbv3", **{**TINY_MBV3_DEFAULT_CHOICES, "depths": [1, 2, 3], **extra})


def layered_table(space, seed=0):
    """Sensitivities that differ a lot between layers (as measured ones do: 3-bit activations of a first
    block cost 30x a late block's 6-bit weights), zero at each gene's highest choice."""
    rng = np.random.default_rng(seed)
    values = {}
    for gene in space.genes:
        if gene.kind == "quant":
            scale = rng.lognormal(0.0, 1.2)
            values[gene.name] = {c: scale * (2.0 ** (max(gene.choices) - c) - 1) / 15 for c in gene.choices}
    return QuantSensitivity(space, values)


def samples(space, n, seed):
    rng, out = np.random.default_rng(seed), {}
    while len(out) < n:
        out.setdefault(space.sample(rng), None)
    return list(out)


def test_score_sums_active_genes_only():
    space = tiny_space()
    table = layered_table(space)
    genome = space.make({**space.largest().as_dict(), "s1.depth": 1, "s1.b1.w_bits": 4, "s1.b2.w_bits": 4})
    # s1.b2 is inactive at depth 1 (the space resets it to its first choice): only s1.b1's 4 bits count
    assert table.score([genome])[0] == pytest.approx(table.values["s1.b1.w_bits"][4])
    assert table.score([space.largest()])[0] == 0.0
    assert table.score([space.smallest()])[0] > table.score([genome])[0]


def test_save_and_load_round_trip(tmp_path):
    space = tiny_space()
    table = layered_table(space)
    back = QuantSensitivity.load(table.save(tmp_path / "quant_sensitivity.json"), space)
    genomes = samples(space, 20, 1)
    assert np.array_equal(back.score(genomes), table.score(genomes))
    assert back.values == table.values


def context_table(space):
    """The layered table plus a context: after a depth-1 first stage, the second stage's first activation
    quantizer is 10x as sensitive (the shape measured on the CIFAR-10 supernet, exaggerated)."""
    base = layered_table(space)
    contexts = {"s1.depth=1": {"s2.b1.a_bits": {c: 10 * v for c, v in base.values["s2.b1.a_bits"].items()}}}
    return base, QuantSensitivity(space, base.values, contexts=contexts)


def test_context_values_replace_the_reference_ones_in_their_context(tmp_path):
    space = tiny_space()
    assert space.feature_interactions() == [("s1.depth", "s2.b1.a_bits")]
    base, table = context_table(space)
    low = min(space.gene("s2.b1.a_bits").choices)
    deep = space.make({**space.largest().as_dict(), "s2.b1.a_bits": low})
    shallow = space.make({**deep.as_dict(), "s1.depth": 1})
    assert table.score([deep])[0] == pytest.approx(base.score([deep])[0])  # the reference's own context
    assert table.score([shallow])[0] - base.score([shallow])[0] == pytest.approx(9 * base.values["s2.b1.a_bits"][low])
    genomes = samples(space, 40, 5)
    back = QuantSensitivity.load(table.save(tmp_path / "quant_sensitivity.json"), space)
    assert back.contexts == table.contexts and np.array_equal(back.score(genomes), table.score(genomes))
    X = FeatureEncoder(space, sensitivity=table).fit_transform(genomes)
    assert np.corrcoef(X[:, -1], table.score(genomes))[0, 1] == pytest.approx(1.0)
    assert not np.allclose(table.score(genomes), base.score(genomes))


@pytest.mark.parametrize("contexts, expected", [
    ({"s9.depth=1": {}}, ["contexts.s9.depth=1", "context gene the space declares ['s1.depth']"]),
    ({"s1.depth=7": {}}, ["contexts.s1.depth=7", "'7' is not one of [1, 2, 3]"]),
    ({"s1.depth=1": {"s1.b1.w_bits": {}}}, ["contexts.s1.depth=1.s1.b1.w_bits", "no interaction"]),
    ({"s1.depth=1": {"s2.b1.a_bits": {"4": -1.0, "6": 0.0, "8": 0.0}}},
     ["contexts.s1.depth=1.s2.b1.a_bits", "finite number >= 0"]),
    ({"s1.depth=1": ["s2.b1.a_bits"]}, ["contexts.s1.depth=1", "expected an object"]),
    ([1, 2], ["contexts", "expected an object"]),
])
def test_bad_contexts_name_the_file_and_field(tmp_path, contexts, expected):
    space = tiny_space()
    data = layered_table(space).to_dict() | {"contexts": contexts}
    with pytest.raises(InputError) as err:
        QuantSensitivity.load(_write(tmp_path, data), space)
    for fragment in ["quant_sensitivity.json", *expected]:
        assert fragment in str(err.value)


def _write(tmp_path, data):
    path = tmp_path / "quant_sensitivity.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["genes"].pop("s2.b1.a_bits"), ["genes.s2.b1.a_bits", "missing"]),
    (lambda d: d["genes"].update({"s1.b1.kernel": {"3": 0.1}}), ["genes.s1.b1.kernel", "not a quantization gene"]),
    (lambda d: d["genes"]["s1.b1.w_bits"].update({"5": 0.1}), ["genes.s1.b1.w_bits", "'5' is not one of"]),
    (lambda d: d["genes"]["s1.b1.w_bits"].pop("4"), ["genes.s1.b1.w_bits", "missing the sensitivity of choice 4"]),
    (lambda d: d["genes"]["s1.b1.w_bits"].update({"4": -1.0}), ["genes.s1.b1.w_bits", "finite number >= 0"]),
    (lambda d: d["genes"]["s1.b1.w_bits"].update({"4": "high"}), ["genes.s1.b1.w_bits", "finite number >= 0"]),
    (lambda d: d["genes"].update({"s1.b1.w_bits": [0.1, 0.0]}), ["genes.s1.b1.w_bits", "expected an object"]),
    (lambda d: d.update({"space": "resnet"}), ["space", "'resnet', not 'mbv3'"]),
    (lambda d: d.pop("genes"), ["genes", "expected an object with a 'genes' object"]),
])
def test_bad_tables_name_the_file_and_field(tmp_path, edit, expected):
    space = tiny_space()
    data = layered_table(space).to_dict()
    edit(data)
    with pytest.raises(InputError) as err:
        QuantSensitivity.load(_write(tmp_path, data), space)
    assert "quant_sensitivity.json" in str(err.value)
    for fragment in expected:
        assert fragment in str(err.value)


def test_nan_not_json_missing_file_and_other_space_options_are_refused(tmp_path):
    space = tiny_space()
    data = layered_table(space).to_dict()
    data["genes"]["s1.b1.w_bits"]["4"] = float("nan")
    with pytest.raises(InputError, match="finite number"):
        QuantSensitivity.load(_write(tmp_path, json.dumps(data)), space)
    with pytest.raises(InputError, match="not a JSON"):
        QuantSensitivity.load(_write(tmp_path, "{genes: "), space)
    with pytest.raises(InputError, match="no such file"):
        QuantSensitivity.load(tmp_path / "absent.json", space)
    path = layered_table(space).save(tmp_path / "t.json")
    with pytest.raises(InputError, match="space_fingerprint"):
        QuantSensitivity.load(path, tiny_space(head_channels=48))


def test_encoder_adds_one_scaled_column_for_quantization_only():
    space = tiny_space()
    table = layered_table(space)
    genomes = samples(space, 40, 2)
    plain, with_table = FeatureEncoder(space), FeatureEncoder(space, sensitivity=table)
    X = with_table.fit_transform(genomes)
    assert with_table.names == plain.names + ["quant_sensitivity"]
    assert X.shape[1] == plain.fit_transform(genomes).shape[1] + 1
    assert abs(X[:, -1].mean()) < 1e-5 and X[:, -1].std() == pytest.approx(1.0, abs=1e-4)
    assert np.corrcoef(X[:, -1], table.score(genomes))[0, 1] == pytest.approx(1.0)
    assert "quant_sensitivity" not in FeatureEncoder(space, kinds=("arch",), sensitivity=table).names
    with pytest.raises(ValueError, match="another space"):
        FeatureEncoder(tiny_space(head_channels=48), sensitivity=table)


def test_sensitivity_feature_lifts_few_sample_ranking():
    """Accuracy driven by layer-specific quantization damage: 30 samples cannot learn the per-layer
    weights from one-hot genes alone, the summed sensitivity hands them over."""
    space = tiny_space()
    table = layered_table(space)
    train, test = samples(space, 30, 3), samples(space, 300, 4)

    def accuracy(genomes):
        macs = np.log([space.costs(g).macs for g in genomes])
        noise = np.random.default_rng(len(genomes)).normal(0, 0.2, len(genomes))
        return 70 + 2 * (macs - macs.mean()) / macs.std() - 4 * table.score(genomes) + noise

    y, y_test = accuracy(train), accuracy(test)
    taus = {}
    for name, extra in (("plain", {}), ("sensitivity", {"sensitivity": table})):
        pred = make_predictor(space, "ridge", seed=0, **extra).fit(train, y)
        taus[name] = ranking_metrics(y_test, pred.predict(test))["kendall_tau"]
    assert taus["sensitivity"] > taus["plain"] + 0.1, taus
    report = make_predictor(space, "ridge", sensitivity=table).fit(train, y).report()
    assert report["quant_sensitivity"] == table.metric == "kl"  # the table's metric names it


def test_transfer_predictor_takes_the_table_on_its_quant_input():
    space = tiny_space()
    table = layered_table(space)
    tp = TransferPredictor(space, method="residual", sensitivity=table)
    assert tp.quant_encoder.names[-1] == "quant_sensitivity"
    genomes = samples(space, 30, 5)
    tp.fit(genomes, 60 - 3 * table.score(genomes))
    assert tp.report()["quant_sensitivity"] == "kl"
