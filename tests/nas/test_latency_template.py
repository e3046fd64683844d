"""Latency tables for a device qnas cannot run on: the template lists every block and writes each as an ONNX
model; a separate process (ONNX Runtime standing in for the device's runtime) times the files and fills the
CSVs; `qnas latency calibrate` fits the calibration on the device's own subnet timings; `qnas latency check`
reports coverage; a search then predicts in that device's latency. Every bad input is one error line."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nas.cli import main as qnas_main
from nas.latency_template import template_blocks, write_template
from nas.template_models import block_model, quantization_of
from predictors.latency import LatencyPredictor, LatencyTable, SlotPlan, table_coverage
from predictors.latency.timings import read_timings
from search_spaces import BlockSpec, InputError, get_space

ROOT = Path(__file__).resolve().parents[2]
TIMER = ROOT / "experiments" / "latency_tables" / "time_onnx_models.py"
OPTIONS = {"in_channels": 1, "image_size": 8, "stem_channels": 8, "stage_channels": [16], "stage_strides": [2],
           "stage_se": [True], "stage_act": ["hswish"], "depths": [1, 2], "kernels": [3, 5], "expands": [3],
           "head_channels": 16, "w_bits": [4, 8], "a_bits": [8]}
SPACE_ARGS = ["--space", "mbv3", "--space-options", json.dumps(OPTIONS)]


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3", **OPTIONS)


@pytest.fixture(scope="module")
def timed(tmp_path_factory, space):
    """A template with ONNX models, timed and filled by the stand-in runtime in its own process."""
    folder = tmp_path_factory.mktemp("npu") / "tpl"
    assert qnas_main(["latency", "template", *SPACE_ARGS, "--backend-hint", "int8", "--models", "onnx",
                         "--device", "Acme NPU-2 (imaginary)", "--backend", "acme-sdk", "--out", str(folder),
                         "--no-progress"]) == 0
    done = subprocess.run([sys.executable, str(TIMER), str(folder), "--runs", "2", "--passes", "2", "--warmup", "1",
                           "--no-pin"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return folder


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = qnas_main(["latency", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(capsys, *argv: str) -> str:
    """Run a command that must fail: exit 2 and exactly one `error: ...` line."""
    code, _, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---- the template --------------------------------------------------------------------------------------
@pytest.mark.parametrize("hint, widths", [("int8", {(8, 8)}), ("fp32", {(32, 32)}), (None, {(4, 8), (8, 8)})])
def test_template_lists_every_distinct_block_with_the_header_filled(tmp_path, space, hint, widths):
    done = write_template(space, tmp_path / "t", hint=hint, progress=False)
    raw = {b.key() for b in SlotPlan.for_space(space).distinct_blocks()}
    blocks, mapping = template_blocks(space, hint)
    assert done.blocks == len(blocks) and done.models == 0 and not (tmp_path / "t" / "models").exists()
    assert {(b.w_bits, b.a_bits) for b in blocks} == widths
    assert (len(blocks) == len(raw)) == (hint is None)
    rows = list(csv.DictReader(line for line in (tmp_path / "t" / "blocks.csv").open() if not line.startswith("#")))
    assert len(rows) == len(blocks) and all(r["mean_ms"] == r["std_ms"] == r["count"] == "" for r in rows)
    with pytest.raises(InputError, match=rf"blocks\.csv: entries: the table has no entries: none of its {len(rows)} "
                                         "rows has mean_ms, std_ms, count filled in yet"):
        LatencyTable.load(tmp_path / "t" / "blocks.csv", space=space)
    text = (tmp_path / "t" / "blocks.csv").read_text()
    assert f"# space_fingerprint: {space.fingerprint()}" in text and "# format: qnas-latency-table/1" in text
    assert json.loads(text.split("# space_options: ")[1].splitlines()[0]) == json.loads(json.dumps(space.options()))
    assert f"# bits_measured_as: {json.dumps({str(k): v for k, v in mapping.items()})}" in text


def test_a_partly_filled_template_loads_with_the_rest_missing(tmp_path, space):
    write_template(space, tmp_path / "t", hint="int8", progress=False)
    path = tmp_path / "t" / "blocks.csv"
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("op,")) + 1
    lines[first] = lines[first].removesuffix(",,,") + ",0.5,0.01,50"
    path.write_text("\n".join(lines) + "\n")
    table = LatencyTable.load(path, space=space)
    assert len(table) == 1 and len(table.unfilled) == len(lines) - first - 1
    coverage = table_coverage(table, space)
    assert coverage.present == 1 and len(coverage.missing) == coverage.needed - 1 and coverage.unfilled
    assert 0 < coverage.fallback_share <= 1
    table.save(path)  # unfilled rows are written back empty, so filling can go on
    assert LatencyTable.load(path, space=space).unfilled.keys() == table.unfilled.keys()


@pytest.mark.parametrize("spec, kind, ops, input_dtype", [
    (BlockSpec("mbconv", 4, 16, 16, kernel=3, mid_ch=48, se=True, act="hswish", shortcut="identity", w_bits=8,
               a_bits=8), "qdq-int8", {"QuantizeLinear", "DequantizeLinear"}, "uint8"),
    (BlockSpec("mbconv", 4, 16, 16, kernel=3, mid_ch=48, act="relu", w_bits=4, a_bits=8), "fake-quant-w4a8",
     {"Round", "Clip"}, "float32"),
    (BlockSpec("conv", 8, 1, 8, kernel=3, act="hswish"), "float", set(), "float32"),
])
def test_block_models_carry_their_quantization(spec, kind, ops, input_dtype):
    import onnx
    import onnxruntime as ort

    model = block_model(spec)
    assert model.quantization == kind == quantization_of(spec.w_bits, spec.a_bits)
    graph = onnx.load_from_string(model.data).graph
    assert ops <= {n.op_type for n in graph.node}
    if not ops:
        assert not {"QuantizeLinear", "Round"} & {n.op_type for n in graph.node}
    (x,) = model.inputs
    assert x["dtype"] == input_dtype
    size, channels = spec.in_size, spec.in_ch  # the key's i{H}x{W}x{C}
    assert x["shape"] == ([1, size, size, channels] if x["layout"] == "NHWC" else [1, channels, size, size])
    assert f"-i{size}x{size}x{channels}-" in spec.key()
    session = ort.InferenceSession(model.data, providers=["CPUExecutionProvider"])
    feed = np.zeros(x["shape"], dtype=x["dtype"])
    assert session.run(None, {"x": feed})[0].shape == tuple(model.outputs[0]["shape"])


def test_models_and_manifest(timed, space):
    manifest = json.loads((timed / "manifest.json").read_text())
    blocks, _ = template_blocks(space, "int8")
    assert [b["key"] for b in manifest["blocks"]] == [b.key() for b in blocks]
    assert all((timed / b["file"]).is_file() and b["file"] == f"models/{b['key']}.onnx" for b in manifest["blocks"])
    names = [s["name"] for s in manifest["subnets"]]
    assert names == ["empty", *(f"subnet-{i:02d}" for i in range(10))]
    assert all((timed / s["file"]).is_file() for s in manifest["subnets"])
    net = manifest["subnets"][1]
    assert net["quantization"] == "qdq-int8" and net["inputs"][0]["dtype"] == "float32"  # whole nets: float in
    assert space.make(net["genes"]) is not None


# ---- the walk-through: template -> time -> fill -> calibrate -> check -> search -------------------------------
def test_walkthrough_to_a_pareto_front_in_the_devices_latency(timed, space, capsys, tmp_path):
    table_path = timed / "blocks.csv"
    filled = LatencyTable.load(table_path, space=space)
    assert not filled.unfilled and all(e.count == 2 and e.mean_ms > 0 for e in filled.entries.values())
    code, out, _ = cli(capsys, "calibrate", str(table_path), "--timings", str(timed / "subnets.csv"))
    assert code == 0 and "fitted on 10 subnets" in out
    table = LatencyTable.load(table_path, space=space)
    empty = next(r for r in csv.DictReader(l for l in (timed / "subnets.csv").open() if not l.startswith("#"))
                 if r["name"] == "empty")
    assert table.header.per_call_overhead_ms == pytest.approx(float(empty["mean_ms"]), rel=1e-5)
    assert table.header.calibration_subnets == 10 and table.header.calibration_scale > 0
    code, out, _ = cli(capsys, "check", str(table_path), *SPACE_ARGS, "--strict")
    assert code == 0 and f"blocks: {len(table)} of {len(table)} blocks the space needs (100%)" in out

    from nas.runner import start_run

    config = {"name": "npu", "dataset": {"name": "digits"}, "search_space": {"name": "mbv3", "options": OPTIONS},
              "latency": {"table": str(table_path), "strict": True},
              "output": {"root": str(tmp_path / "runs"), "export_top": 0},
              "search": {"algorithm": "random", "budget": 8, "options": {"batch_size": 8},
                         "objectives": [{"metric": "size_kb"}, {"metric": "latency_ms"}]}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    run = start_run(tmp_path / "exp.yaml").run_dir
    rows = list(csv.DictReader((run / "pareto.csv").open()))
    predictor = LatencyPredictor(table, strict=True)
    trials = {json.loads(line)["key"]: json.loads(line) for line in (run / "trials.jsonl").open()}
    assert rows
    for row in rows:
        genome = space.from_dict(trials[row["key"]]["genome"])
        assert float(row["latency_ms"]) == pytest.approx(predictor.predict(space.blocks(genome)).ms)


# ---- coverage ---------------------------------------------------------------------------------------------
def test_check_reports_coverage_and_strict_fails_on_missing_blocks(timed, space, capsys, tmp_path):
    table = LatencyTable.load(timed / "blocks.csv", space=space)
    keep = dict(list(table.entries.items())[:3])
    partial = LatencyTable(table.header, keep.values())
    partial.save(tmp_path / "partial.csv")
    code, out, _ = cli(capsys, "check", str(tmp_path / "partial.csv"), *SPACE_ARGS)
    needed = len(table)
    coverage = table_coverage(partial, space)
    assert code == 0 and out.startswith(f"{tmp_path / 'partial.csv'}: incomplete")
    assert f"blocks: 3 of {needed} blocks the space needs" in out and f"missing: {needed - 3}, first: " in out
    assert coverage.missing[0] in out and f"fallback: {coverage.fallback_share:.1%} of 1000 random subnets" in out
    line = one_error(capsys, "check", str(tmp_path / "partial.csv"), *SPACE_ARGS, "--strict")
    assert f"partial.csv: entries: the strict table lacks {needed - 3} of the {needed} blocks" in line


def test_check_refuses_a_table_for_other_space_options(timed, space, capsys, tmp_path):
    table = LatencyTable.load(timed / "blocks.csv", space=space)
    other = dict(OPTIONS, stem_channels=16, stage_channels=[24], head_channels=32)  # no block in common
    line = one_error(capsys, "check", str(timed / "blocks.csv"), "--space", "mbv3", "--space-options",
                     json.dumps(other))
    assert "blocks.csv:" in line and "space_fingerprint: the table was made for another 'mbv3' space" in line
    table.with_header(space_fingerprint="").save(tmp_path / "nofp.csv")  # no fingerprint: only the blocks tell
    line = one_error(capsys, "check", str(tmp_path / "nofp.csv"), "--space", "mbv3", "--space-options",
                     json.dumps(other))
    assert "nofp.csv: entries: none of the table's" in line and "other space options" in line
    code, out, _ = cli(capsys, "check", str(tmp_path / "nofp.csv"), *SPACE_ARGS)
    assert code == 0 and "no space_fingerprint" in out


# ---- bad input: one error line, exit 2 ---------------------------------------------------------------------
def test_template_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "mine.txt").write_text("keep me")
    line = one_error(capsys, "template", *SPACE_ARGS, "--out", str(tmp_path / "t"), "--no-progress")
    assert line == f"error: {tmp_path / 't'}: --out: exists and is not an empty folder; a template goes into a new " \
                   "folder (it never overwrites files)"
    assert (tmp_path / "t" / "mine.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert cli(capsys, "template", *SPACE_ARGS, "--out", str(tmp_path / "empty"), "--no-progress")[0] == 0
    assert (tmp_path / "empty" / "blocks.csv").is_file() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("flag", ["--calibration", "--batch", "--threads"])
def test_template_numeric_flags_must_be_positive(tmp_path, capsys, flag):
    line = one_error(capsys, "template", *SPACE_ARGS, "--out", str(tmp_path / "t"), flag, "0")
    assert f"{flag}: got 0; expected an integer >= 1" in line


def _timings_text(folder: Path) -> list[str]:
    return (folder / "subnets.csv").read_text().splitlines()


def _with_row(lines: list[str], name: str, change) -> list[str]:
    out = list(lines)
    i = next(i for i, line in enumerate(out) if line.startswith(name + ","))
    out[i] = change(out[i])
    return out


def _mean(value: str):
    return lambda line: line.rsplit(",", 1)[0] + "," + value


def _drop(prefix: str, keep: str = "~"):
    return lambda ls: [l for l in ls if not l.startswith(prefix) or l.startswith(keep)]


def _replace(old: str, new: str):
    return lambda ls: [l.replace(old, new) for l in ls]


@pytest.mark.parametrize("change, row, expected", [
    (lambda ls: _with_row(ls, "subnet-03", _mean("")), "subnet-03,",
     r"mean_ms: not filled in: time subnets/subnet-03\.onnx on the device"),
    (lambda ls: _with_row(ls, "subnet-03", _mean("fast")), "subnet-03,",
     r"mean_ms: expected a finite number of ms, got 'fast'"),
    (lambda ls: _with_row(ls, "subnet-03", _mean("nan")), "subnet-03,",
     r"mean_ms: expected a finite number of ms, got 'nan'"),
    (lambda ls: _with_row(ls, "subnet-03", _mean("inf")), "subnet-03,",
     r"mean_ms: expected a finite number of ms, got 'inf'"),
    (lambda ls: _with_row(ls, "subnet-03", _mean("-0.2")), "subnet-03,", r"mean_ms: got -0\.2, expected a latency > 0"),
    (lambda ls: _with_row(ls, "empty", _mean("-1")), "empty,", r"mean_ms: got -1\.0, expected a latency >= 0"),
    (lambda ls: _with_row(ls, "subnet-03", lambda l: l.replace("s1.depth", "s1.deep")), "subnet-03,",
     r"genome\.s1\.deep: unknown gene; did you mean 's1\.depth'\?"),
    (_replace("name,genome,mean_ms", "name,genome,mean"), "name,", r"mean: unknown column; did you mean 'mean_ms'\?"),
    (_replace('",', '",0.5,'), "subnet-00,", r"row: expected 3 cells, got 4"),
    (_replace("# space_fingerprint: ", "# space_fingerprint: 0123456789abcdef"), "# space_fingerprint",
     r"space_fingerprint: the timings were made for another 'mbv3' space"),
    (_drop("empty,"), None, r"name: missing the row 'empty'"),
    (_drop("subnet-", keep="subnet-00"), None, r"name: 1 timed subnet\(s\); a calibration needs at least 2"),
])
def test_bad_timings_are_one_error_naming_file_line_and_field(timed, capsys, tmp_path, change, row, expected):
    import re

    lines = change(_timings_text(timed))
    bad = tmp_path / "timings.csv"
    bad.write_text("\n".join(lines) + "\n")
    table = tmp_path / "t.csv"
    table.write_bytes((timed / "blocks.csv").read_bytes())
    message = one_error(capsys, "calibrate", str(table), "--timings", str(bad))
    where = "" if row is None else f":{next(i for i, text in enumerate(lines, 1) if text.startswith(row))}"
    assert re.match(re.escape(f"error: {bad}{where}: ") + expected, message), message
    assert table.read_bytes() == (timed / "blocks.csv").read_bytes()  # nothing written


def test_timings_file_guards(timed, space, tmp_path):
    bad = tmp_path / "subnets.csv"
    bad.write_bytes(b"\x00\x01binary")
    with pytest.raises(InputError, match=r"subnets\.csv:1: binary data"):
        read_timings(bad, space)
    bad.write_bytes("name,genome,mean_ms\n".encode() + b"\xff\n")
    with pytest.raises(InputError, match=r"subnets\.csv:2: not UTF-8 text"):
        read_timings(bad, space)
    with pytest.raises(InputError, match=r"subnets\.csv:\d+: space: the timings are of space 'mbv3', not 'resnet'"):
        read_timings(timed / "subnets.csv", get_space("resnet"))
    copy = tmp_path / "copy.csv"
    copy.write_text((timed / "subnets.csv").read_text().replace("# format: qnas-subnet-timings/1", "# format: x"))
    with pytest.raises(InputError, match=r"copy\.csv:\d+: format: expected '# format: qnas-subnet-timings/1'"):
        read_timings(copy, space)


def test_calibrate_needs_every_block_of_the_timed_subnets(timed, space, capsys, tmp_path):
    table = LatencyTable.load(timed / "blocks.csv", space=space)
    largest = {table.key_for(b) for b in space.blocks(space.largest())}
    LatencyTable(table.header, [e for k, e in table.entries.items() if k not in largest]).save(tmp_path / "t.csv")
    line = one_error(capsys, "calibrate", str(tmp_path / "t.csv"), "--timings", str(timed / "subnets.csv"))
    assert "subnets.csv:" in line and ": genome: block " in line and "is not in" in line and "fill it first" in line
