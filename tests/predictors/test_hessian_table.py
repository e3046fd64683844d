"""The Hessian-sensitivity table: save/load round trip, validation naming file and field, Spearman."""

import json

import numpy as np
import pytest

from predictors.accuracy import HESSIAN_JSON, HessianSensitivity, QuantSensitivity
from predictors.accuracy.hessian import variant_spearman
from search_spaces import InputError
from search_spaces.testing import tiny_mbv3

SPACE = tiny_mbv3(w_bits=[2, 4, 8], a_bits=[4, 8])
QUANT = [g for g in SPACE.genes if g.kind == "quant"]


def make(seed: int = 0) -> HessianSensitivity:
    rng = np.random.default_rng(seed)
    omega = {g.name: {c: float(rng.random() / c) for c in g.choices} for g in QUANT}
    traces = {g.name: float(rng.normal()) for g in QUANT}
    return HessianSensitivity(SPACE, omega, traces=traces, samples=16, images=256)


def test_a_saved_table_loads_back_equal_and_serves_as_a_predictor_feature(tmp_path):
    table = make()
    path = table.save(tmp_path / HESSIAN_JSON)
    again = HessianSensitivity.load(path, SPACE)
    assert again.values == table.values and again.traces == table.traces
    assert (again.samples, again.images, again.metric) == (16, 256, "hawq")
    genomes = [SPACE.sample(np.random.default_rng(s)) for s in range(5)]
    assert np.array_equal(again.score(genomes), table.score(genomes))
    as_feature = QuantSensitivity.load(path, SPACE)  # what predictors.quant_sensitivity: PATH reads
    assert as_feature.metric == "hawq" and np.array_equal(as_feature.score(genomes), table.score(genomes))


def edit(tmp_path, change):
    data = make().to_dict()
    change(data)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, field, message", [
    (lambda d: d["traces"].update({"s9.b1.w_bits": 1.0}), "traces.s9.b1.w_bits", "not a quantization gene"),
    (lambda d: d["traces"].update({QUANT[0].name: "big"}), f"traces.{QUANT[0].name}", "finite number"),
    (lambda d: d.update(traces=[1, 2]), "traces", "expected an object"),
    (lambda d: d.update(samples=0), "samples", "positive integer"),
    (lambda d: d.pop("images"), "images", "positive integer"),
    (lambda d: d.update(metric="kl"), "metric", "'hawq'"),
    (lambda d: d["genes"][QUANT[1].name].update({"4": -1.0}), f"genes.{QUANT[1].name}", "finite number >= 0"),
    (lambda d: d.update(space="resnet"), "space", "not 'mbv3'"),
])
def test_a_damaged_table_is_one_error_naming_file_and_field(tmp_path, change, field, message):
    path = edit(tmp_path, change)
    with pytest.raises(InputError, match=message) as err:
        HessianSensitivity.load(path, SPACE)
    assert err.value.source == str(path) and err.value.field == field and "\n" not in str(err.value)


def test_a_table_of_another_space_is_refused(tmp_path):
    path = make().save(tmp_path / HESSIAN_JSON)
    with pytest.raises(InputError, match="fingerprint") as err:
        HessianSensitivity.load(path, tiny_mbv3(w_bits=[4, 8], a_bits=[4, 8]))
    assert err.value.source == str(path)


def test_spearman_counts_each_lowered_variant_relative_to_the_reference():
    ref = {"a": 8, "b": 8}
    drops = {"a": {2: 0.30, 4: 0.05, 8: 0.0}, "b": {2: 0.10, 4: 0.01, 8: 0.0}}
    same_order = {"a": {2: 9.0, 4: 2.5, 8: 2.0}, "b": {2: 5.0, 4: 1.1, 8: 1.0}}  # absolute, offset per gene
    assert variant_spearman(same_order, drops, ref) == (pytest.approx(1.0), 4)
    reversed_ = {g: {c: -v for c, v in row.items()} for g, row in drops.items()}
    assert variant_spearman(reversed_, drops, ref)[0] == pytest.approx(-1.0)
    partial = {"a": {2: 1.0, 4: 2.0, 8: 0.0}, "b": {2: 3.0, 4: 0.5, 8: 0.0}}
    # ranks (2, 3, 4, 1) against drops' (4, 2, 3, 1): rho = 1 - 6 * (4 + 1 + 1 + 0) / (4 * 15)
    assert variant_spearman(partial, drops, ref)[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="3 or more"):
        variant_spearman({"a": drops["a"]}, {"a": drops["a"]}, ref)
