"""Predictor-in-the-loop runs: report of predictor quality, reusable predictor datasets, bad input."""

import json

import pytest
import torch
import yaml

from nas.kinds import load_experiment
from nas.runner import prepare, start_run
from predictors.accuracy import HessianSensitivity, PredictorDataset, QuantSensitivity
from search_spaces import InputError, get_space

from test_supernet_run import CONFIG as BASE

CONFIG = BASE | {
    "predictors": {"model": "ridge"},
    "search": {"algorithm": "predictor-nsga2", "budget": 22,
               "options": {"n_startup_trials": 10, "batch_size": 4, "population_size": 12, "generations": 5},
               "objectives": [{"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]},
}


def write(folder, config):
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(config | {"output": {"root": str(folder / "runs"), "export_top": 1}}))
    return path


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    torch.set_num_threads(1)
    return start_run(write(tmp_path_factory.mktemp("pred"), CONFIG))


def test_predictor_report_has_rounds_and_held_out_quality(first):
    report = json.loads((first.run_dir / "predictor_report.json").read_text())
    assert report["predicted_metrics"] == ["accuracy"] and report["n_measured"] == 22
    guided = [r for r in report["rounds"] if r.get("predictors")]
    assert len(guided) == 3 and all(r["held_out"]["accuracy"]["n"] == 4 for r in guided)
    assert report["held_out_pooled"]["accuracy"]["n"] == 12
    assert "## Predictors" in (first.run_dir / "report.md").read_text()
    assert ("Features: one-hot genes, the space's gene interactions (joint one-hot of declared pairs), log costs "
            "and the bit-width histogram.") in (first.run_dir / "report.md").read_text()


def test_predictor_dataset_is_written_and_reusable(first, tmp_path):
    space = get_space("mbv3", **BASE["search_space"]["options"])
    data = PredictorDataset.load(first.run_dir / "predictor_dataset.csv", space)
    assert len(data) == 22
    config = CONFIG | {"predictors": {"model": "ridge", "dataset": str(first.run_dir / "predictor_dataset.csv")},
                       "supernet": {"checkpoint": str(first.run_dir / "supernet.pt"), "bn_calib_samples": 128}}
    second = start_run(write(tmp_path, config))
    report = json.loads((second.run_dir / "predictor_report.json").read_text())
    assert report["n_prior_rows"] == 22


@pytest.mark.parametrize("change, expected", [
    ({"search": BASE["search"]}, ["predictors", "does not use predictors", "predictor-nsga2"]),
    ({"predictors": {"model": "ridgee"}}, ["predictors.model", "did you mean 'ridge'"]),
    ({"predictors": {"candidates": ["svr", "auto"]}}, ["predictors.candidates[1]", "unknown model 'auto'"]),
    ({"predictors": {"quant_sensitivity": 3}}, ["predictors.quant_sensitivity", "expected true, false, hessian or the path"]),
    ({"predictors": {"quant_sensitivity": "absent.json"}}, ["predictors.quant_sensitivity", "absent.json"]),
    ({"predictors": {"quant_sensitivity": "Hessian"}}, ["predictors.quant_sensitivity", "did you mean 'hessian'"]),
    ({"predictors": {"interactions": "sometimes"}}, ["predictors.interactions", "bool"]),
])
def test_bad_predictor_sections_are_named(tmp_path, change, expected):
    with pytest.raises(InputError) as err:
        prepare(load_experiment(write(tmp_path, CONFIG | change)))
    for fragment in expected:
        assert fragment in str(err.value)


def test_predictor_dataset_from_another_space_is_refused(first, tmp_path):
    options = BASE["search_space"]["options"] | {"head_channels": 48}
    config = CONFIG | {"search_space": {"name": "mbv3", "options": options},
                       "predictors": {"dataset": str(first.run_dir / "predictor_dataset.csv")}}
    with pytest.raises(InputError, match=r"predictor_dataset\.csv.*(fingerprint|space)"):
        prepare(load_experiment(write(tmp_path, config)))


def test_quant_sensitivity_is_measured_saved_and_reused(first, tmp_path):
    """``true`` measures the table on the supernet into the run folder; a later run names the file."""
    reuse = {"checkpoint": str(first.run_dir / "supernet.pt"), "bn_calib_samples": 128}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    measured = start_run(write(tmp_path / "a", CONFIG | {"supernet": reuse,
                                                         "predictors": {"model": "ridge", "quant_sensitivity": True}}))
    table = measured.run_dir / "quant_sensitivity.json"
    space = get_space("mbv3", **BASE["search_space"]["options"])
    loaded = QuantSensitivity.load(table, space)
    values = loaded.values
    assert set(values) == {g.name for g in space.genes if g.kind == "quant"}
    assert list(loaded.contexts) == [("s1.depth", 1)]  # the space's declared interaction, in its other context
    assert max(v for row in values.values() for v in row.values()) > 0
    report = json.loads((measured.run_dir / "predictor_report.json").read_text())
    guided = [r for r in report["rounds"] if r.get("predictors")]
    assert guided and all(r["predictors"]["accuracy"]["quant_sensitivity"] for r in guided)
    assert "summed per-layer quantization sensitivity" in (measured.run_dir / "report.md").read_text()
    named = start_run(write(tmp_path / "b", CONFIG | {"supernet": reuse,
                                                      "predictors": {"model": "ridge", "quant_sensitivity": str(table)}}))
    assert not (named.run_dir / "quant_sensitivity.json").exists()
    assert json.loads((named.run_dir / "predictor_report.json").read_text())["rounds"][-1]["predictors"][
        "accuracy"]["quant_sensitivity"]


def test_quant_sensitivity_of_another_space_or_without_a_supernet_is_refused(first, tmp_path):
    space = get_space("mbv3", **BASE["search_space"]["options"])
    other = {"s1.b1.w_bits": {"4": 0.1, "8": 0.0}}
    path = tmp_path / "quant_sensitivity.json"
    path.write_text(json.dumps({"space": "mbv3", "space_fingerprint": space.fingerprint(), "genes": other}))
    with pytest.raises(InputError, match=r"quant_sensitivity\.json.*genes\.s1\.b1\.a_bits.*missing"):
        prepare(load_experiment(write(tmp_path, CONFIG | {"predictors": {"quant_sensitivity": str(path)}})))
    analytic = CONFIG | {"supernet": None, "predictors": {"quant_sensitivity": True},
                         "search": CONFIG["search"] | {"objectives": [{"metric": "size_kb", "direction": "min"},
                                                                      {"metric": "bitops", "direction": "min"}]}}
    for setting in (True, "hessian"):
        analytic["predictors"] = {"quant_sensitivity": setting}
        with pytest.raises(InputError, match="predictors.quant_sensitivity.*no supernet section"):
            prepare(load_experiment(write(tmp_path, {k: v for k, v in analytic.items() if v is not None})))


def test_hessian_sensitivity_is_the_predictors_feature_when_asked(first, tmp_path):
    """``hessian``: HAWQ-V3's table of the supernet, measured into the run folder, is the predictors' feature."""
    reuse = {"checkpoint": str(first.run_dir / "supernet.pt"), "bn_calib_samples": 128}
    run = start_run(write(tmp_path, CONFIG | {"supernet": reuse,
                                              "predictors": {"model": "ridge", "quant_sensitivity": "hessian"}}))
    space = get_space("mbv3", **BASE["search_space"]["options"])
    table = HessianSensitivity.load(run.run_dir / "hessian_sensitivity.json", space)
    assert set(table.values) == {g.name for g in space.genes if g.kind == "quant"} and table.samples == 16
    assert not (run.run_dir / "quant_sensitivity.json").exists()
    report = json.loads((run.run_dir / "predictor_report.json").read_text())
    guided = [r for r in report["rounds"] if r.get("predictors")]
    assert guided and all(r["predictors"]["accuracy"]["quant_sensitivity"] == "hawq" for r in guided)
    assert "HAWQ-V3's Hessian trace" in (run.run_dir / "report.md").read_text()
