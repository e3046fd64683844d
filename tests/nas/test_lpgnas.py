"""nas.lpgnas: a tiny LPGNAS run writes the CNN-run artifacts, resumes by λ, and refuses bad configs."""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import supernets.gnn
from nas.journal import RECORD_KEYS, read_journal
from nas.lpgnas import LpgnasConfig, lpgnas_config, run_lpgnas
from search_spaces import InputError, get_space
from search_spaces.testing import tiny_gnn
from supernets.data import load_dataset
from supernets.gnn import NonFiniteLossError, prepare_graph

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
TINY = LpgnasConfig(lambdas=[0.0, 0.05], search_epochs=5, warmup_epochs=2, retrain_epochs=8, seeds=2)


@pytest.fixture(scope="module")
def cora(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_dataset("cora")


def test_tiny_run_writes_journal_front_and_report(cora, tmp_path):
    space = tiny_gnn()
    records = run_lpgnas(TINY, space, cora, tmp_path, seed=0, progress=False)
    journal = read_journal(tmp_path / "trials.jsonl").records
    assert len(journal) == len(records) == 2
    for record, lam in zip(journal, TINY.lambdas):
        assert set(RECORD_KEYS) <= set(record) and record["metrics"]["lambda"] == lam
        assert space.from_dict(record["genome"]).key == record["key"]
        assert record["sources"]["accuracy"] == "measured" and record["sources"]["size_kb"] == "analytic"
        assert len(record["details"]["test_accuracies"]) == 2
        assert (tmp_path / record["details"]["search_curve"]).is_file()
    with open(tmp_path / "pareto.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert 1 <= len(rows) <= 2
    assert {"accuracy", "accuracy_std", "size_kb", "bitops", "lambda", "genome"} <= set(rows[0])
    assert all(0 <= float(r["accuracy"]) <= 100 and float(r["size_kb"]) > 0 for r in rows)
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert [f["key"] for f in front] == [r["key"] for r in rows]
    report = (tmp_path / "report.md").read_text()
    assert "What was measured" in report and "Search curves" in report
    assert "## Pareto front" in report and "## Hypervolume" in report  # the sections every kind's report has
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "hypervolume.png").read_bytes()[:4] == b"\x89PNG"
    history = (tmp_path / "hypervolume.csv").read_text().splitlines()
    assert history[0] == "batch,evaluations,front_size,hypervolume" and len(history) == 1 + len(TINY.lambdas)
    assert json.loads((tmp_path / "pareto.json").read_text())["objectives"] == [
        {"metric": "accuracy", "direction": "max"}, {"metric": "size_kb", "direction": "min"}]


def test_rerun_skips_finished_lambdas(cora, tmp_path, monkeypatch):
    space = tiny_gnn()
    first = LpgnasConfig(lambdas=[0.05], search_epochs=4, warmup_epochs=1, retrain_epochs=5, seeds=1)
    run_lpgnas(first, space, cora, tmp_path, seed=0, progress=False)
    searched = []
    original = supernets.gnn.search
    monkeypatch.setattr(supernets.gnn, "search", lambda *a, **k: searched.append(k["lam"]) or original(*a, **k))
    more = first.model_copy(update={"lambdas": [0.05, 0.0]})
    records = run_lpgnas(more, space, cora, tmp_path, seed=0, progress=False)
    assert searched == [0.0]
    assert [r["metrics"]["lambda"] for r in records] == [0.05, 0.0]
    run_lpgnas(more, space, cora, tmp_path, seed=0, progress=False)
    assert searched == [0.0] and len(read_journal(tmp_path / "trials.jsonl").records) == 2


def test_restarts_keep_the_lowest_search_objective(cora, tmp_path, monkeypatch):
    space = tiny_gnn()
    config = LpgnasConfig(lambdas=[0.05], search_epochs=6, warmup_epochs=2, retrain_epochs=4, seeds=1,
                          search_restarts=3, select_by="objective")
    seen = []
    original = supernets.gnn.search
    monkeypatch.setattr(supernets.gnn, "search", lambda *a, **k: seen.append(k["seed"]) or original(*a, **k))
    (record,) = run_lpgnas(config, space, cora, tmp_path, seed=4, progress=False)
    assert seen == [4, 5, 6]
    restarts = record["details"]["restarts"]
    assert [r["seed"] for r in restarts] == [4, 5, 6] and sum(r["chosen"] for r in restarts) == 1
    kept = next(r for r in restarts if r["chosen"])
    assert kept["objective"] == min(r["objective"] for r in restarts) and kept["key"] == record["key"]
    assert record["metrics"]["search_seconds"] == pytest.approx(sum(r["search_seconds"] for r in restarts))
    # the objective is the derived design's val CE plus λ times the log-cost penalty of its analytic costs
    outcome = original(space, prepare_graph(cora), config.search_settings(), lam=0.05, seed=kept["seed"])
    costs = space.costs(outcome.genome)
    assert outcome.genome.key == kept["key"]
    assert kept["objective"] == pytest.approx(outcome.supernet_val_loss + 0.05 * (
        math.log(costs.size_bytes / 1024) + 0.1 * math.log(costs.bitops)))
    assert json.loads((tmp_path / "searches" / "lambda-0.05.json").read_text())["seed"] == kept["seed"]


def test_restarts_keep_the_best_score_after_short_retraining(cora, tmp_path, monkeypatch):
    space = tiny_gnn()
    config = LpgnasConfig(lambdas=[0.05], search_epochs=6, warmup_epochs=2, retrain_epochs=6, seeds=3,
                          search_restarts=3, select_seeds=2)
    retrained = []
    original = supernets.gnn.retrain
    monkeypatch.setattr(supernets.gnn, "retrain",
                        lambda sp, genome, *a, **k: retrained.append((genome.key, k["seed"])) or original(sp, genome, *a, **k))
    (record,) = run_lpgnas(config, space, cora, tmp_path, seed=0, progress=False)
    restarts = record["details"]["restarts"]
    kept = next(r for r in restarts if r["chosen"])
    assert kept["key"] == record["key"]
    assert kept["selection_score"] == min(r["selection_score"] for r in restarts)
    for r in restarts:  # validation error plus λ times the design's log-cost penalty
        assert r["selection_score"] == pytest.approx(r["selection_val_loss"] + 0.05 * r["penalty"])
    m = record["metrics"]
    assert kept["penalty"] == pytest.approx(math.log(m["size_kb"]) + 0.1 * math.log(m["bitops"]))
    # every distinct design got seeds 0-1 once; the kept one continued with seed 2 (its first two are reused)
    designs = {r["key"] for r in restarts}
    assert sorted(retrained) == sorted([(k, s) for k in designs for s in (0, 1)] + [(record["key"], 2)])
    assert record["details"]["seeds"] == [0, 1, 2]
    report = (tmp_path / "report.md").read_text()
    lpgnas_tables = report.split("## What was measured")[1]  # after the shared front table
    assert "## Restarts" in report and lpgnas_tables.count("| 0.05 |") == 2 + 3  # design and curve rows, 3 restarts


class _Retrained:
    """Stands in for ``_Retrainings``: every retraining of a design gives its fixed validation accuracy and CE."""

    def __init__(self, val_loss, val_acc=None):
        self.val_loss, self.val_acc = val_loss, val_acc or {}

    def results(self, key, n):
        from supernets.gnn import RetrainOutcome

        return [RetrainOutcome(s, 0.0, self.val_acc.get(key, 0.7), 0, 1.0, val_loss=self.val_loss[key])
                for s in range(n)]


@pytest.mark.parametrize("lam, kept", [(0.0, "largest"), (0.05, "smallest")])
def test_selection_prices_size_with_lambda(lam, kept):
    """A larger design with a lower validation loss wins at λ = 0 and loses once λ prices its size."""
    from nas.lpgnas import _choose
    from supernets.gnn import SearchOutcome

    space = tiny_gnn()
    designs = {"largest": space.largest(), "smallest": space.smallest()}
    val = {designs["largest"].key: 0.95, designs["smallest"].key: 1.0}  # validation cross-entropy
    outcomes = [SearchOutcome(g, lam, (), 0.5, 1.0, seed=i) for i, g in enumerate(designs.values())]

    config = LpgnasConfig(lambdas=[lam], search_restarts=2)
    outcome, restarts = _choose(space, config, lam, outcomes, _Retrained(val), progress=False)
    assert outcome.genome.key == designs[kept].key and [r["chosen"] for r in restarts].count(True) == 1


def _three_designs(space):
    """The largest, a middle and the smallest design of ``space``, by size."""
    big, small = space.largest(), space.smallest()
    middle = space.make({**big.to_dict()["genes"], "l1.w_bits": 2, "l2.w_bits": 2})
    sizes = [space.costs(g).size_kb for g in (big, middle, small)]
    assert sizes[0] > sizes[1] > sizes[2]
    return big, middle, small, sizes


@pytest.mark.parametrize("budget, kept, fits", [(None, 0, True), ("middle", 1, True), ("below", 2, False)])
def test_accuracy_selection_keeps_the_most_accurate_design_within_the_budget(budget, kept, fits):
    """select_by: accuracy ranks restarts by retrained validation accuracy (not by cross-entropy); a max_size_kb
    budget removes larger designs first, and when nothing fits the smallest is kept, flagged."""
    from nas.lpgnas import _choose
    from supernets.gnn import SearchOutcome

    space = tiny_gnn()
    designs = _three_designs(space)
    sizes = designs[3]
    val_acc = dict(zip((g.key for g in designs[:3]), (0.75, 0.72, 0.70)))
    val_loss = dict(zip((g.key for g in designs[:3]), (1.2, 1.0, 0.9)))  # cross-entropy alone would keep the smallest
    outcomes = [SearchOutcome(g, 0.01, (), 0.5, 1.0, seed=i) for i, g in enumerate(designs[:3])]

    limit = {None: None, "middle": (sizes[1] + sizes[0]) / 2, "below": sizes[2] / 2}[budget]
    config = LpgnasConfig(lambdas=[0.01], search_restarts=3, select_by="accuracy", max_size_kb=limit)
    outcome, restarts = _choose(space, config, 0.01, outcomes, _Retrained(val_loss, val_acc), progress=False)
    assert outcome.genome.key == designs[kept].key
    assert restarts[kept]["chosen"] and restarts[kept]["within_budget"] is fits
    assert [r["within_budget"] for r in restarts] == [limit is None or s <= limit for s in sizes]


def test_a_budget_also_applies_to_validation_selection():
    from nas.lpgnas import _choose
    from supernets.gnn import SearchOutcome

    space = tiny_gnn()
    big, middle, small, sizes = _three_designs(space)
    val_loss = {big.key: 0.8, middle.key: 0.9, small.key: 1.0}
    outcomes = [SearchOutcome(g, 0.0, (), 0.5, 1.0, seed=i) for i, g in enumerate((big, middle, small))]

    config = LpgnasConfig(lambdas=[0.0], search_restarts=3, max_size_kb=(sizes[0] + sizes[1]) / 2)
    outcome, _ = _choose(space, config, 0.0, outcomes, _Retrained(val_loss), progress=False)
    assert outcome.genome.key == middle.key  # the largest has the lowest loss but does not fit


def test_only_restarts_within_the_budget_are_retrained_for_the_selection():
    from nas.lpgnas import _contenders
    from supernets.gnn import SearchOutcome

    space = tiny_gnn()
    big, middle, small, sizes = _three_designs(space)
    outcomes = [SearchOutcome(g, 0.01, (), 0.5, 1.0, seed=i) for i, g in enumerate((big, middle, small, middle))]
    within = LpgnasConfig(search_restarts=4, select_by="accuracy", max_size_kb=(sizes[0] + sizes[1]) / 2)
    assert _contenders(space, within, outcomes) == [1, 2]  # the big one cannot be kept; the repeated design once
    assert _contenders(space, within.model_copy(update={"max_size_kb": sizes[2] * 1.01}), outcomes) == []
    assert _contenders(space, within.model_copy(update={"max_size_kb": sizes[2] / 2}), outcomes) == []


class _PerSeed:
    """Stands in for ``_Retrainings``: design -> validation accuracy of seed 0, 1, ...; remembers the seeds asked."""

    def __init__(self, val_acc):
        self.val_acc, self.seeds = val_acc, dict.fromkeys(val_acc, 2)

    def ensure(self, genome, n):
        self.seeds[genome.key] = max(n, self.seeds[genome.key])

    def results(self, key, n):
        from supernets.gnn import RetrainOutcome

        assert n <= self.seeds[key], "a result was read before its retraining was queued"
        return [RetrainOutcome(s, 0.0, self.val_acc[key][s], 0, 1.0, val_loss=1.0) for s in range(n)]


@pytest.mark.parametrize("final, kept", [(None, 0), (4, 1)])
def test_the_two_best_designs_are_compared_again_on_final_select_seeds(final, kept):
    """Two lucky first seeds put the largest design ahead; on four seeds the middle one is better. The smallest,
    third after two seeds, is not retrained further."""
    from nas.lpgnas import _choose
    from supernets.gnn import SearchOutcome

    space = tiny_gnn()
    designs = _three_designs(space)[:3]
    val_acc = dict(zip((g.key for g in designs), ([0.74, 0.74, 0.66, 0.66], [0.73] * 4, [0.60] * 4)))
    outcomes = [SearchOutcome(g, 0.01, (), 0.5, 1.0, seed=i) for i, g in enumerate(designs)]
    config = LpgnasConfig(lambdas=[0.01], search_restarts=3, select_by="accuracy", final_select_seeds=final)
    retrained = _PerSeed(val_acc)
    outcome, restarts = _choose(space, config, 0.01, outcomes, retrained, progress=False)
    assert outcome.genome.key == designs[kept].key and restarts[kept]["chosen"]
    assert [r["selection_seeds"] for r in restarts] == [final or 2, final or 2, 2]
    assert list(retrained.seeds.values()) == [final or 2, final or 2, 2]
    assert restarts[1]["selection_val_accuracy"] == pytest.approx(73.0)


def test_select_from_run_chooses_among_the_searches_of_every_lambda(cora, tmp_path, monkeypatch):
    """With a budget, the most accurate design of all searches is every λ's (it is retrained once)."""
    space = tiny_gnn()
    config = LpgnasConfig(lambdas=[0.0, 0.05], search_epochs=4, warmup_epochs=1, retrain_epochs=5, seeds=2,
                          select_seeds=1, select_by="accuracy", select_from="run")
    assert config.retrains_restarts  # one search per λ, but two to choose from
    records = run_lpgnas(config, space, cora, tmp_path, seed=0, progress=False)
    for record in records:
        restarts = record["details"]["restarts"]
        assert [r["lambda"] for r in restarts] == [0.0, 0.05] and [r["seed"] for r in restarts] == [0, 1]
        assert record["metrics"]["search_seconds"] == next(
            r["search_seconds"] for r in restarts if r["lambda"] == record["metrics"]["lambda"])
    assert len({r["key"] for r in records[0]["details"]["restarts"]}) == 2  # two designs to choose from
    kept = max(records[0]["details"]["restarts"], key=lambda r: r["selection_val_accuracy"])
    assert records[0]["key"] == records[1]["key"] == kept["key"]
    assert records[1]["details"]["reused_from_lambda"] == 0.0
    curve = json.loads((tmp_path / "searches" / "lambda-0.05.json").read_text())
    assert curve["lambda"] == 0.05 and curve["search_lambda"] == kept["lambda"]


def test_worker_processes_give_the_same_records(cora, tmp_path):
    space = tiny_gnn()
    config = LpgnasConfig(lambdas=[0.0, 0.05], search_epochs=4, warmup_epochs=1, retrain_epochs=4, seeds=2,
                          search_restarts=2)
    serial = run_lpgnas(config, space, cora, tmp_path / "serial", seed=0, progress=False)
    parallel = run_lpgnas(config.model_copy(update={"workers": 2}), space, cora, tmp_path / "parallel", seed=0,
                          progress=False)
    for a, b in zip(serial, parallel, strict=True):
        assert a["key"] == b["key"]
        assert a["metrics"]["accuracy"] == b["metrics"]["accuracy"]
        assert [r["objective"] for r in a["details"]["restarts"]] == [r["objective"] for r in b["details"]["restarts"]]


def test_a_worker_s_non_finite_loss_reaches_the_caller_intact():
    err = pickle.loads(pickle.dumps(NonFiniteLossError("validation cross-entropy", 7, math.nan, "search")))
    assert isinstance(err, NonFiniteLossError) and (err.term, err.epoch, err.phase) == (
        "validation cross-entropy", 7, "search")
    assert "validation cross-entropy is nan at epoch 7" in str(err)


@pytest.mark.parametrize("section, field, message", [
    ({"lambdas": []}, "lpgnas.lambdas", "at least one"),
    ({"lambdas": [0.1, -1]}, "lpgnas.lambdas", ">= 0"),
    ({"lambdas": [0.1, 0.1]}, "lpgnas.lambdas", "distinct"),
    ({"lambda": [0.1]}, "lpgnas.lambda", "did you mean 'lambdas'"),
    ({"search_epochs": 10, "warmup_epochs": 10}, "lpgnas", "warmup_epochs"),
    ({"seeds": 0}, "lpgnas.seeds", "greater than or equal to 1"),
    ({"penalty": "quadratic"}, "lpgnas.penalty", "'log' or 'linear'"),
    ({"retrain_step_lr_scale": 0}, "lpgnas.retrain_step_lr_scale", "greater than 0"),
    ({"search_restarts": 0}, "lpgnas.search_restarts", "greater than or equal to 1"),
    ({"seeds": 2, "select_seeds": 3, "search_restarts": 2}, "lpgnas", "select_seeds"),
    ({"select_by": "test"}, "lpgnas.select_by", "'validation', 'accuracy' or 'objective'"),
    ({"max_size_kb": 0}, "lpgnas.max_size_kb", "greater than 0"),
    ({"seeds": 2, "select_seeds": 3, "search_restarts": 2, "select_by": "accuracy"}, "lpgnas", "select_seeds"),
    ({"workers": 1.5}, "lpgnas.workers", "integer"),
    ({"seeds": 4, "final_select_seeds": 5}, "lpgnas", "final_select_seeds"),
    ({"select_seeds": 3, "final_select_seeds": 2}, "lpgnas", "final_select_seeds"),
])
def test_bad_config_sections(section, field, message):
    with pytest.raises(InputError, match=message) as err:
        lpgnas_config(section, source="x.yaml")
    assert err.value.field == field and "x.yaml" in str(err.value)


def test_only_the_gnn_space(cora, tmp_path):
    with pytest.raises(InputError, match="'gnn' space"):
        run_lpgnas(TINY, get_space("resnet"), cora, tmp_path, seed=0, progress=False)


@pytest.mark.parametrize("name", ["lpgnas_cora", "lpgnas_citeseer"])
def test_example_configs_are_valid(name):
    data = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())
    assert data["kind"] == "lpgnas" and data["search_space"]["name"] == "gnn"
    config = lpgnas_config(data["lpgnas"])
    assert config.seeds == 10 and len(config.lambdas) >= 3
    assert config.retrain_settings().step_lr_scale == data["lpgnas"]["retrain_step_lr_scale"] == 3.0
    space = get_space("gnn", **data["search_space"]["options"])
    assert space.options()["in_features"] == {"lpgnas_cora": 1433, "lpgnas_citeseer": 3703}[name]
    assert set(data) <= {"kind", "name", "seed", "dataset", "search_space", "lpgnas", "output"}
