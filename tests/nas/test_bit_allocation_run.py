"""ilp-bits and nas-then-ilp in real runs: the sensitivity measured on the supernet, saved, reused."""

import json

import pytest
import torch
import yaml

from nas.runner import start_run
from predictors.accuracy import HESSIAN_JSON, HessianSensitivity, QuantSensitivity
from search_spaces import get_space

from test_supernet_run import CONFIG as BASE

SPACE = get_space("mbv3", **BASE["search_space"]["options"])


def sizes() -> tuple[float, float]:
    """size_kb of the largest architecture at its lowest and at its highest bits."""
    big = SPACE.largest()
    low = SPACE.canonical(big.with_values({g.name: g.choices[0] for g in SPACE.genes if g.kind == "quant"}))
    return SPACE.costs(low).size_kb, SPACE.costs(big).size_kb


def config(options: dict, algorithm: str = "ilp-bits", budget: int = 2, **extra) -> dict:
    return BASE | {"search": {"algorithm": algorithm, "options": options, "budget": budget,
                              "objectives": [{"metric": "accuracy", "direction": "max"},
                                             {"metric": "size_kb", "direction": "min"}]}} | extra


def run(folder, cfg):
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg | {"output": {"root": str(folder / "runs"), "export_top": 1}}))
    return start_run(path)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    torch.set_num_threads(1)
    low, high = sizes()
    budgets = [f"size_kb <= {(low + high) / 2:.3f}", f"size_kb <= {low + 0.2 * (high - low):.3f}"]
    return budgets, run(tmp_path_factory.mktemp("ilp"), config({"budgets": budgets, "hessian_samples": 2}))


def test_a_run_measures_the_hessian_table_and_meets_every_budget(measured):
    budgets, result = measured
    table = HessianSensitivity.load(result.run_dir / HESSIAN_JSON, SPACE)
    assert table.samples == 2 and set(table.traces) == {g.name for g in SPACE.genes if g.kind == "quant"}
    trials = [json.loads(line) for line in (result.run_dir / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2
    for trial, text in zip(trials, budgets):
        assert trial["metrics"]["size_kb"] <= float(text.split("<=")[1])
        assert 0 <= trial["metrics"]["accuracy"] <= 1
        genes = trial["genome"]["genes"]
        assert all(genes[g.name] == SPACE.largest()[g.name] for g in SPACE.genes if g.kind == "arch")


def test_a_saved_table_is_reused_and_kl_is_measured_for_nas_then_ilp(measured, tmp_path):
    budgets, first = measured
    reuse = {"checkpoint": str(first.run_dir / "supernet.pt"), "bn_calib_samples": 128}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    named = run(tmp_path / "a", config({"budgets": budgets[:1], "sensitivity": str(first.run_dir / HESSIAN_JSON)},
                                       budget=1, supernet=reuse))
    assert not (named.run_dir / HESSIAN_JSON).exists()
    trials = [json.loads(line) for line in (named.run_dir / "trials.jsonl").read_text().splitlines()]
    assert [t["key"] for t in trials] == [json.loads((first.run_dir / "trials.jsonl").read_text().splitlines()[0])["key"]]
    unmet = f"size_kb <= {SPACE.costs(SPACE.smallest()).size_kb + 1e-4:.4f}"  # only the smallest architecture
    two = run(tmp_path / "b", config({"budgets": budgets[:1] + [unmet], "sensitivity": "kl", "nas_trials": 4,
                                      "top_k": 1,
                                      "inner": "random", "inner_options": {"batch_size": 4}},
                                     algorithm="nas-then-ilp", budget=5, supernet=reuse))
    assert QuantSensitivity.load(two.run_dir / "quant_sensitivity.json", SPACE).metric == "kl"
    assert len((two.run_dir / "trials.jsonl").read_text().splitlines()) == 5
    report = (two.run_dir / "report.md").read_text()  # the unmet budget is reported, not silently skipped
    assert f"budget '{unmet}': none of the 4 architectures the first stage measured can meet it" in report


def test_the_predictors_and_the_ilp_of_one_run_share_one_hessian_table(measured, tmp_path):
    """``predictors.quant_sensitivity: hessian`` beside a Hessian ILP: one table, measured once with the ILP's
    samples."""
    from nas.experiment import SilentReporter

    lines: list[str] = []

    class Lines(SilentReporter):
        def info(self, line: str) -> None:
            lines.append(line)

    budgets, first = measured
    reuse = {"checkpoint": str(first.run_dir / "supernet.pt"), "bn_calib_samples": 128}
    cfg = config({"budgets": budgets[:1], "hessian_samples": 3, "nas_trials": 4, "top_k": 1, "inner": "random",
                  "inner_options": {"batch_size": 4}}, algorithm="nas-then-ilp", budget=5, supernet=reuse,
                 predictors={"model": "ridge", "quant_sensitivity": "hessian"})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg | {"output": {"root": str(tmp_path / "runs"), "export_top": 1}}))
    shared = start_run(path, reporter=Lines())
    assert HessianSensitivity.load(shared.run_dir / HESSIAN_JSON, SPACE).samples == 3
    assert len((shared.run_dir / "trials.jsonl").read_text().splitlines()) == 5
    measures = [line for line in lines if line.startswith("Hessian sensitivity")]
    assert len(measures) == 2 and "3 Rademacher samples" in measures[0] and "reusing" in measures[1], measures
