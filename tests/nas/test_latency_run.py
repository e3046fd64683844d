"""Latency tables in `qnas run`: your own device's table, several tables as several objectives,
profiling this machine on first use, measured latency of the final front, and bad tables."""

import csv
import json

import pytest
import yaml

from nas.kinds import load_experiment
from nas.runner import prepare, start_run
from predictors.latency import Entry, LatencyTable, SlotPlan, TableHeader
from search_spaces import InputError, get_space, model_costs
from search_spaces.testing import TINY_MBV3

OPTIONS = TINY_MBV3


def npu_table(path, *, drop: int = 0):
    """A hand-written table for an imaginary accelerator: 20 us per block + MACs at 1 GMAC/s per 8 bits."""
    space = get_space("mbv3", **OPTIONS)
    blocks = SlotPlan.for_space(space).distinct_blocks()[drop:]
    entries = [Entry(b, 0.02 + model_costs([b]).macs * b.w_bits / 8 / 1e6, 0.0, 1) for b in blocks]
    header = TableHeader(device="Acme NPU-2 (imaginary)", backend="acme-sdk", space="mbv3",
                         space_fingerprint=space.fingerprint())
    LatencyTable(header, entries).save(path)
    return path


def config(folder, latency, objectives=None, **search):
    data = {"name": "lat", "dataset": {"name": "digits"}, "search_space": {"name": "mbv3", "options": OPTIONS},
            "latency": latency, "output": {"root": str(folder / "runs"), "export_top": 0},
            "search": {"algorithm": "random", "budget": 16, "options": {"batch_size": 8},
                       "objectives": objectives or [{"metric": "size_kb"}, {"metric": "latency_ms"}], **search}}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_devices_become_two_objectives(tmp_path):
    latency = {"tables": [{"name": "npu", "table": str(npu_table(tmp_path / "npu.csv"))},
                          {"name": "cpu", "profile": {"backend": "torch-fp32", "runs": 5, "passes": 2,
                                                      "cache_dir": str(tmp_path / "cache")}}]}
    objectives = [{"metric": "latency_ms.npu"}, {"metric": "latency_ms.cpu"}]
    outcome = start_run(config(tmp_path, latency, objectives, constraints=["latency_ms.npu <= 0.5"]))
    rows = list(csv.DictReader((outcome.run_dir / "pareto.csv").open()))
    assert rows and all(float(r["latency_ms.npu"]) <= 0.5 for r in rows)
    # the CPU table was profiled on this machine, so its front is timed for real; the NPU's cannot be
    assert {"latency_pred_ms.cpu", "latency_measured_ms.cpu"} <= set(rows[0])
    assert "latency_measured_ms.npu" not in rows[0]
    assert all(float(r["latency_measured_ms.cpu"]) > 0 for r in rows)
    assert list((tmp_path / "cache").glob("mbv3-*-torch-fp32-t1-b1.csv"))
    sources = json.loads((outcome.run_dir / "trials.jsonl").read_text().splitlines()[0])["sources"]
    assert sources["latency_ms.npu"] == "predicted" and sources["size_kb"] == "analytic"


def test_missing_entries_use_the_flagged_fallback_or_fail_in_strict_mode(tmp_path):
    table = str(npu_table(tmp_path / "npu.csv", drop=3))
    outcome = start_run(config(tmp_path, {"table": table}))
    flags = [json.loads(line)["metrics"]["latency_ms_fallback"] for line in (outcome.run_dir / "trials.jsonl").open()]
    assert set(flags) <= {0.0, 1.0} and 1.0 in flags
    with pytest.raises(InputError, match=r"latency\.table: .*npu\.csv: the strict table lacks 3 of the \d+ blocks"):
        start_run(config(tmp_path, {"table": table, "strict": True}))  # refused before the run folder is made
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_validate_checks_coverage_before_anything_trains(tmp_path):
    space = get_space("mbv3", **OPTIONS)
    needed = len(SlotPlan.for_space(space).distinct_blocks())
    kept = 28  # the table: 28 blocks of a space that needs more
    partial = str(npu_table(tmp_path / "npu.csv", drop=needed - kept))
    with pytest.raises(InputError) as err:
        prepare(load_experiment(config(tmp_path, {"tables": [{"name": "npu", "table": partial, "strict": True}]})))
    assert f"latency.tables[0].table: {partial}: the strict table lacks {needed - kept} of the {needed} blocks" \
        in str(err.value) and "first: " in str(err.value)
    notes = prepare(load_experiment(config(tmp_path, {"table": partial}))).latency_notes
    assert len(notes) == 1 and f"{kept} of {needed} blocks; " in notes[0] and "of 1000 random subnets need the " \
        "fallback" in notes[0]
    full = prepare(load_experiment(config(tmp_path, {"table": str(npu_table(tmp_path / "full.csv")), "strict": True})))
    assert full.latency_notes == (f"latency_ms: full.csv (acme-sdk on Acme NPU-2 (imaginary), all {needed} blocks)",)


def test_a_table_for_other_options_without_a_fingerprint_is_refused(tmp_path):
    other = get_space("mbv3", **dict(OPTIONS, head_channels=48, stem_channels=16))
    blocks = SlotPlan.for_space(other).distinct_blocks()
    header = TableHeader(device="Acme NPU-2 (imaginary)", backend="acme-sdk", space="mbv3")  # no fingerprint
    LatencyTable(header, [Entry(b, 0.1, 0.0, 1) for b in blocks if b.op != "mbconv"]).save(tmp_path / "old.csv")
    with pytest.raises(InputError, match=r"latency\.table: .*old\.csv: none of the table's \d+ entries is one of "
                                         r"the \d+ blocks this space needs"):
        prepare(load_experiment(config(tmp_path, {"table": str(tmp_path / "old.csv")})))


def test_bad_tables_are_reported_before_any_work(tmp_path):
    good = npu_table(tmp_path / "npu.csv")
    lines = good.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("conv,"))
    cells = lines[row].split(",")
    cells[-3] = "-0.5"  # mean_ms
    lines[row] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"bad\.csv:{row + 1}: mean_ms"):
        prepare(load_experiment(config(tmp_path, {"table": str(bad)})))
    with pytest.raises(InputError, match=r"latency\.backend: the table .* was measured on backend 'acme-sdk', "
                                         r"not 'onnxruntime-int8'"):
        prepare(load_experiment(config(tmp_path, {"table": str(good), "backend": "onnxruntime-int8"})))
    other = dict(OPTIONS, head_channels=48)
    path = config(tmp_path, {"table": str(good)})
    data = yaml.safe_load(path.read_text())
    data["search_space"]["options"] = other
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=r"npu\.csv.*(fingerprint|space)"):
        prepare(load_experiment(path))


@pytest.mark.parametrize("latency, expected", [
    ({"table": "missing.csv"}, ["latency.table", "file or folder not found"]),
    ({"profile": {"backend": "onnxruntime-int9"}}, ["latency.profile.backend", "did you mean 'onnxruntime-int8'"]),
    ({}, ["latency", "exactly one of table"]),
    ({"tables": [{"profile": {"backend": "torch-fp32"}}, {"profile": {"backend": "torch-int8"}}]},
     ["latency", "distinct names"]),
])
def test_bad_latency_sections_are_named(tmp_path, latency, expected):
    with pytest.raises(InputError) as err:
        load_experiment(config(tmp_path, latency))
    for fragment in expected:
        assert fragment in str(err.value)


def test_latency_objective_without_a_section_says_how(tmp_path):
    path = config(tmp_path, None)
    data = yaml.safe_load(path.read_text())
    del data["latency"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="add a `latency:` section"):
        prepare(load_experiment(path))


# ---- reproducible latencies: the run's own copy of every table ------------------------------------------------
def _latencies(run_dir, metric="latency_ms"):
    rows = [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]
    return {r["key"]: r["metrics"][metric] for r in rows}


def test_a_resume_predicts_with_the_runs_copy_not_the_edited_table(tmp_path):
    from nas.runner import resume_run

    table = npu_table(tmp_path / "npu.csv")
    outcome = start_run(config(tmp_path, {"table": str(table)}))
    run, before = outcome.run_dir, _latencies(outcome.run_dir)
    entry = json.loads((run / "manifest.json").read_text())["latency_tables"]["latency_ms"]
    assert entry["copy"] == "latency/latency_ms.csv" and entry["from"] == str(table)
    assert entry["calibration"] == "as in the file" and (run / entry["copy"]).is_file()
    lines = (run / "trials.jsonl").read_text().splitlines(keepends=True)
    (run / "trials.jsonl").write_text("".join(lines[:5]))  # a crash after 5 candidates
    original = LatencyTable.load(table)
    LatencyTable(original.header, [Entry(e.spec, 2 * e.mean_ms, e.std_ms, e.count) for e in original.entries.values()]
                 ).save(table)  # the user edits the table meanwhile
    assert resume_run(run).result.evaluated == 11
    assert _latencies(run) == before


def test_profiled_table_without_recalibration_gives_bit_identical_latencies(tmp_path):
    profile = {"backend": "torch-fp32", "runs": 5, "passes": 2, "cache_dir": str(tmp_path / "cache")}
    first = start_run(config(tmp_path, {"profile": profile})).run_dir  # profiles and caches the table
    again = [start_run(config(tmp_path, {"profile": {**profile, "recalibrate": recalibrate}})).run_dir
             for recalibrate in (False, True)]
    assert _latencies(again[0]) == _latencies(first)
    calibrations = [json.loads((run / "manifest.json").read_text())["latency_tables"]["latency_ms"]["calibration"]
                    for run in (first, *again)]
    assert calibrations == ["fitted when profiled", "as cached", "refitted at run start"]
    fronts = [[row["key"] for row in csv.DictReader((run / "pareto.csv").open())] for run in (first, *again)]
    assert fronts[0] and fronts[0] == fronts[1] == fronts[2], "a refitted calibration rescales, it does not reorder"
