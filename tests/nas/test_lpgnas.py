"""nas.lpgnas: a tiny LPGNAS run writes the CNN-run artifacts, resumes by λ, and refuses bad configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import supernets.gnn
from nas.journal import RECORD_KEYS, read_journal
from nas.lpgnas import LpgnasConfig, lpgnas_config, run_lpgnas
from search_spaces import InputError, get_space
from supernets.data import load_dataset

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = dict(ops=["linear", "gcn"], hidden=[8, 16], aggregations=["add"], activations=["relu"],
                  w_bits=[2, 8], a_bits=[8, 32], c_bits=[8])
TINY = LpgnasConfig(lambdas=[0.0, 0.05], search_epochs=5, warmup_epochs=2, retrain_epochs=8, seeds=2)


@pytest.fixture(scope="module")
def cora(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QNAS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return load_dataset("cora")


def test_tiny_run_writes_journal_front_and_report(cora, tmp_path):
    space = get_space("gnn", **TINY_SPACE)
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
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_lambdas(cora, tmp_path, monkeypatch):
    space = get_space("gnn", **TINY_SPACE)
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


@pytest.mark.parametrize("section, field, message", [
    ({"lambdas": []}, "lpgnas.lambdas", "at least one"),
    ({"lambdas": [0.1, -1]}, "lpgnas.lambdas", ">= 0"),
    ({"lambdas": [0.1, 0.1]}, "lpgnas.lambdas", "distinct"),
    ({"lambda": [0.1]}, "lpgnas.lambda", "did you mean 'lambdas'"),
    ({"search_epochs": 10, "warmup_epochs": 10}, "lpgnas", "warmup_epochs"),
    ({"seeds": 0}, "lpgnas.seeds", "greater than or equal to 1"),
    ({"penalty": "quadratic"}, "lpgnas.penalty", "'log' or 'linear'"),
    ({"retrain_step_lr_scale": 0}, "lpgnas.retrain_step_lr_scale", "greater than 0"),
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
