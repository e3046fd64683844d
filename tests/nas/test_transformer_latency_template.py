"""Latency tables of transformer spaces for a device qnas cannot run on: `qnas latency template` lists every
transformer block in the transformer table format and writes each block and calibration subnet as the ONNX
model a table profiled here would time; once the device's times are filled in, `qnas latency calibrate` takes
the per-call overhead off the rows and fits the calibration on the timed subnets, and `check --strict` passes;
`recalibrate` refits a table of this machine on subnets measured now. Every bad input is one error line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from nas.cli import main as qnas_main
from nas.transformer_latency import profile_transformer_space
from nas.transformer_latency_template import template_transformer_blocks, write_transformer_template
from predictors.latency.transformer_table import (TransformerLatencyPredictor, TransformerLatencyTable,
                                                  distinct_transformer_blocks, transformer_bits_measured_as)
from search_spaces import InputError, get_space

from test_latency_template import cli, one_error  # the `qnas latency` runners of the CNN template tests

OPTIONS = {"front": "lm", "vocab_size": 11, "seq_len": 8, "depths": [1], "widths": [16], "heads": [2],
           "mlp_ratios": [1, 2]}
SPACE_ARGS = ["--space", "transformer", "--space-options", json.dumps(OPTIONS)]
N_SUBNETS = 4


@pytest.fixture(scope="module")
def space():
    return get_space("transformer", **OPTIONS)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A template of the tiny LM space with its ONNX models (int8 hint), as the CLI writes it."""
    folder = tmp_path_factory.mktemp("npu") / "tpl"
    assert qnas_main(["latency", "template", *SPACE_ARGS, "--backend-hint", "int8", "--models", "onnx",
                      "--device", "Acme NPU-2 (imaginary)", "--backend", "acme-sdk", "--calibration", str(N_SUBNETS),
                      "--out", str(folder), "--no-progress"]) == 0
    return folder


def data_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(line for line in path.open() if not line.startswith("#")))


def _ort_run(path: Path, inputs: list[dict], seed: int = 0) -> list[np.ndarray]:
    """Run a model of the folder on random inputs built only from the manifest's description."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    feed = {}
    for item in inputs:
        if "values" in item:
            low, high = item["values"]
            feed[item["name"]] = rng.integers(low, high + 1, item["shape"]).astype(item["dtype"])
        else:
            feed[item["name"]] = rng.standard_normal(item["shape"]).astype(item["dtype"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


# ---- the template --------------------------------------------------------------------------------------
@pytest.mark.parametrize("hint", ["int8", "fp32", None])
def test_template_lists_every_transformer_block_with_the_header_filled(tmp_path, space, hint):
    done = write_transformer_template(space, tmp_path / "t", hint=hint, n_calibration=3, progress=False)
    blocks, mapping = template_transformer_blocks(space, hint)
    target = {"int8": 8, "fp32": 32}.get(hint)
    assert mapping == (transformer_bits_measured_as(space, hint) if hint else {})
    assert (target is None and not mapping) or set(mapping.values()) == {target}
    assert {b.key() for b in blocks} == {b.key() for b in distinct_transformer_blocks(space, mapping)}
    assert done.blocks == len(blocks) and done.subnets == 3 and done.models == 0
    assert not (tmp_path / "t" / "models").exists()
    rows = data_rows(tmp_path / "t" / "blocks.csv")
    assert len(rows) == len(blocks) and all(r["mean_ms"] == r["std_ms"] == r["count"] == "" for r in rows)
    pairs = {p for r in rows for p in r["bits"].split(".")}
    assert pairs == ({f"w{target}a{target}"} if target else {"w4a8", "w8a8", "w8a32"})
    text = (tmp_path / "t" / "blocks.csv").read_text()
    assert text.startswith("# format: qnas-transformer-latency-table/1\n")
    assert f"# space_fingerprint: {space.fingerprint()}" in text and "# space: transformer" in text
    assert json.loads(text.split("# space_options: ")[1].splitlines()[0]) == json.loads(json.dumps(space.options()))
    assert f"# bits_measured_as: {json.dumps({str(k): v for k, v in sorted(mapping.items())})}" in text
    assert f"# dtype: {hint or 'mixed'}" in text
    subnets = data_rows(tmp_path / "t" / "subnets.csv")
    assert [r["name"] for r in subnets] == ["empty", "subnet-00", "subnet-01", "subnet-02"]
    assert all(r["mean_ms"] == "" for r in subnets)
    genomes = [space.make(json.loads(r["genome"])) for r in subnets[1:]]
    assert genomes[:2] == [space.smallest(), space.largest()]
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["table_format"] == "qnas-transformer-latency-table/1" and manifest["backend_hint"] == hint
    assert manifest["blocks"] == manifest["subnets"] == []


def test_template_models_run_on_the_inputs_the_manifest_describes(template, space):
    import onnx

    manifest = json.loads((template / "manifest.json").read_text())
    blocks, _ = template_transformer_blocks(space, "int8")
    assert [b["key"] for b in manifest["blocks"]] == [b.key() for b in blocks]
    rows = data_rows(template / "blocks.csv")
    assert [b["signature"] for b in manifest["blocks"]] == [{c: r[c] for c in b["signature"]}
                                                           for b, r in zip(manifest["blocks"], rows)]
    for block in manifest["blocks"]:
        assert block["file"] == f"models/{block['key']}.onnx" and block["quantization"] == "qdq-int8"
        graph = onnx.load(str(template / block["file"])).graph
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
        (x,) = block["inputs"]
        assert x["dtype"] == ("int64" if block["key"].startswith("embed-lm") else "float32")
        if x["dtype"] == "int64":
            assert x["values"] == [0, OPTIONS["vocab_size"] - 1] and x["shape"] == [1, OPTIONS["seq_len"]]
        else:
            assert x["shape"] == [1, OPTIONS["seq_len"], int(block["signature"]["width"])]
        (y,) = _ort_run(template / block["file"], block["inputs"])
        assert list(y.shape) == block["outputs"][0]["shape"] and np.isfinite(y).all()
    names = [s["name"] for s in manifest["subnets"]]
    assert names == ["empty", *(f"subnet-{i:02d}" for i in range(N_SUBNETS))]
    for subnet in manifest["subnets"]:
        (y,) = _ort_run(template / subnet["file"], subnet["inputs"])
        assert list(y.shape) == subnet["outputs"][0]["shape"] and np.isfinite(y).all()
        if subnet["genes"] is not None:
            assert subnet["quantization"] == "qdq-int8" and space.make(subnet["genes"]) is not None
            assert list(y.shape) == [1, OPTIONS["vocab_size"], OPTIONS["seq_len"]]  # lm logits (B, V, T)


def test_fp32_hint_writes_float_models(tmp_path, space, capsys):
    code, out, _ = cli(capsys, "template", *SPACE_ARGS, "--backend-hint", "fp32", "--models", "onnx",
                       "--calibration", "2", "--out", str(tmp_path / "t"), "--no-progress")
    assert code == 0 and "(bits 4, 8 as 32-bit)" in out and "ONNX models" in out
    import onnx

    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert {m["quantization"] for m in manifest["blocks"] + manifest["subnets"]} == {"float"}
    for item in manifest["blocks"] + manifest["subnets"]:
        ops = {n.op_type for n in onnx.load(str(tmp_path / "t" / item["file"])).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear"}


# ---- calibrate and check -------------------------------------------------------------------------------
OVERHEAD = 0.01


def _fill(template: Path, folder: Path, space, *, scale: float = 1.5, offset: float = 0.02) -> dict[str, float]:
    """Copy the template's CSV files into ``folder`` filled with known times: block i takes 0.1 (i + 1) ms
    plus the overhead, subnet k ``scale · (overhead + Σ its blocks) + offset`` ms; returns block ms by key."""
    folder.mkdir()
    pure: dict[str, float] = {}
    lines = (template / "blocks.csv").read_text().splitlines()
    out = []
    for line in lines:
        if line.startswith("#") or line.startswith("op,"):
            out.append(line)
            continue
        cells = line.split(",")
        key = f"{cells[0]}-{cells[1]}-t{cells[2]}-d{cells[3]}-i{cells[4]}-h{cells[5]}-{cells[6]}"
        pure[key] = 0.1 * (len(pure) + 1)
        out.append(",".join([*cells[:7], repr(pure[key] + OVERHEAD), "0.001", "50"]))
    (folder / "blocks.csv").write_text("\n".join(out) + "\n")
    table = TransformerLatencyTable.load(folder / "blocks.csv", space=space)
    out = []
    for row in (template / "subnets.csv").read_text().splitlines():
        if row.startswith("empty,"):
            row += repr(OVERHEAD)
        elif row.startswith("subnet-"):
            genome = space.make(json.loads(next(csv.reader([row]))[1]))
            raw = OVERHEAD + sum(pure[table.key_for(b)] for b in space.transformer_blocks(genome))
            row += repr(scale * raw + offset)
        out.append(row)
    (folder / "subnets.csv").write_text("\n".join(out) + "\n")
    return pure


def test_calibrate_fits_the_timed_subnets_and_check_strict_passes(template, space, capsys, tmp_path):
    folder = tmp_path / "filled"
    pure = _fill(template, folder, space)
    table_path, timings = str(folder / "blocks.csv"), str(folder / "subnets.csv")
    code, out, _ = cli(capsys, "calibrate", table_path, "--timings", timings)
    assert code == 0, out
    assert re.match(re.escape(f"{table_path}: per-call overhead 0 -> {OVERHEAD:g} ms (taken off every block row), "
                              "calibration 1 * raw +0 -> 1.5 * raw +0.02 (fitted on ") + rf"{N_SUBNETS} subnets", out)
    table = TransformerLatencyTable.load(table_path, space=space)
    h = table.header
    assert h.per_call_overhead_ms == OVERHEAD and h.calibration_subnets == N_SUBNETS
    assert h.calibration_scale == pytest.approx(1.5, rel=1e-4) and h.calibration_offset_ms == pytest.approx(0.02, 1e-3)
    assert {k: e.mean_ms for k, e in table.entries.items()} == pytest.approx(pure)  # the overhead taken off
    assert h.device == "Acme NPU-2 (imaginary)" and h.backend == "acme-sdk"
    assert "fitted by qnas latency calibrate on 4 subnets" in h.notes
    predictor = TransformerLatencyPredictor(table, space)
    rng = np.random.default_rng(0)
    for genome in [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(5))]:
        estimate = predictor.predict(genome)
        raw = OVERHEAD + sum(pure[table.key_for(b)] for b in space.transformer_blocks(genome))
        assert estimate.raw_ms == pytest.approx(raw) and not estimate.missing_keys
        assert estimate.ms == pytest.approx(h.calibration_scale * raw + h.calibration_offset_ms)
    for row in data_rows(folder / "subnets.csv")[1:]:  # the fit reproduces the timed subnets
        assert predictor.predict(space.make(json.loads(row["genome"]))).ms == pytest.approx(float(row["mean_ms"]),
                                                                                             rel=1e-4)
    code, out, _ = cli(capsys, "check", table_path, *SPACE_ARGS, "--strict")
    n = len(distinct_transformer_blocks(space, h.bits_measured_as))
    assert code == 0 and out.startswith(f"{table_path}: OK, {n} transformer blocks for space 'transformer', acme-sdk "
                                        "(int8) on Acme NPU-2 (imaginary)")
    assert f"blocks present: {n} of the {n} the space needs" in out
    before = (folder / "blocks.csv").read_text()
    assert cli(capsys, "calibrate", table_path, "--timings", timings, *SPACE_ARGS)[0] == 0  # a refit: same rows
    after = (folder / "blocks.csv").read_text()
    assert [line for line in after.splitlines() if not line.startswith("# date")] == \
           [line for line in before.splitlines() if not line.startswith("# date")]
    assert after.count("fitted by qnas latency calibrate") == 1


def test_calibrate_with_the_stand_in_runtime(template, space, capsys, tmp_path):
    """The walkthrough's timer (ONNX Runtime standing in for the device) fills the transformer template too."""
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "tpl"
    shutil.copytree(template, folder)
    timer = Path(__file__).resolve().parents[2] / "experiments" / "latency_tables" / "time_onnx_models.py"
    done = subprocess.run([sys.executable, str(timer), str(folder), "--runs", "2", "--passes", "2", "--warmup", "1",
                           "--no-pin"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, out, _ = cli(capsys, "calibrate", str(folder / "blocks.csv"), "--timings", str(folder / "subnets.csv"))
    assert code == 0 and f"(fitted on {N_SUBNETS} subnets" in out
    table = TransformerLatencyTable.load(folder / "blocks.csv", space=space)
    assert all(e.count == 2 and e.mean_ms >= 0 for e in table.entries.values())
    assert cli(capsys, "check", str(folder / "blocks.csv"), *SPACE_ARGS, "--strict")[0] == 0


# ---- bad input: one error line, exit 2 ---------------------------------------------------------------------
def _line_of(path: Path, prefix: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(prefix))


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def test_calibrate_of_an_unfilled_template_names_the_first_block_to_time(template, capsys, tmp_path):
    table = tmp_path / "blocks.csv"
    table.write_bytes((template / "blocks.csv").read_bytes())
    line = one_error(capsys, "calibrate", str(table), "--timings", str(template / "subnets.csv"))
    assert line == (f"error: {table}:{_line_of(table, 'attention,')}: mean_ms: not filled in: time "
                    "models/attention-lm-t8-d16-i16-h2-w8a8.w8a8.onnx on the device and write its mean_ms, std_ms "
                    "and count")
    line = one_error(capsys, "check", str(table))  # the table reader says the same, without the model file
    assert line.startswith(f"error: {table}:{_line_of(table, 'attention,')}: mean_ms: block "
                           "attention-lm-t8-d16-i16-h2-w8a8.w8a8 is not timed yet")


@pytest.mark.parametrize("what", ["blocks-number", "blocks-count", "timings-number", "timings-unfilled",
                                  "other-space", "other-options", "missing-block", "timings-gene"])
def test_bad_calibrate_inputs_are_one_error_naming_file_line_and_field(template, space, capsys, tmp_path, what):
    folder = tmp_path / "filled"
    _fill(template, folder, space)
    blocks, timings = folder / "blocks.csv", folder / "subnets.csv"
    if what == "blocks-number":
        _edit(blocks, ",0.001,50", ",fast,50")
        where, expected = (blocks, "attention,"), "std_ms: expected a finite number, got 'fast'"
    elif what == "blocks-count":
        _edit(blocks, ",0.001,50", ",0.001,2.5")
        where, expected = (blocks, "attention,"), "count: expected an integer, got '2.5'"
    elif what == "timings-number":
        row = next(r for r in timings.read_text().splitlines() if r.startswith("subnet-02,"))
        _edit(timings, row, row.rsplit(",", 1)[0] + ",slow")
        where, expected = (timings, "subnet-02,"), "mean_ms: expected a finite number of ms, got 'slow'"
    elif what == "timings-unfilled":
        row = next(r for r in timings.read_text().splitlines() if r.startswith("subnet-01,"))
        _edit(timings, row, row.rsplit(",", 1)[0] + ",")
        where, expected = (timings, "subnet-01,"), r"mean_ms: not filled in: time subnets/subnet-01\.onnx"
    elif what == "other-space":
        _edit(timings, "# space: transformer", "# space: mbv3")
        where, expected = (timings, "# space:"), "space: the timings are of space 'mbv3', not 'transformer'"
    elif what == "other-options":
        _edit(timings, f"# space_fingerprint: {space.fingerprint()}", "# space_fingerprint: 0123456789abcdef")
        where, expected = (timings, "# space_fingerprint"), \
            "space_fingerprint: the timings were made for another 'transformer' space"
    elif what == "missing-block":
        key = "mlp,lm,8,16,32,"
        blocks.write_text("".join(line for line in blocks.open() if not line.startswith(key)))
        largest = next(r["name"] for r in data_rows(timings)[1:]
                       if space.make(json.loads(r["genome"])) == space.largest())
        where, expected = (timings, f"{largest},"), (rf"genome: block mlp-lm-t8-d16-i32-h0-w8a8\.w8a8 of {largest} "
                                                     rf"is not in {re.escape(str(blocks))}; time and fill it first")
    else:
        _edit(timings, '""depth""', '""deep""')
        where, expected = (timings, "subnet-00,"), r"genome\.deep: unknown gene; did you mean 'depth'\?"
    before = blocks.read_bytes()
    message = one_error(capsys, "calibrate", str(blocks), "--timings", str(timings))
    path, prefix = where
    assert re.match(re.escape(f"error: {path}:{_line_of(path, prefix)}: ") + expected, message), message
    assert blocks.read_bytes() == before  # nothing written


def test_template_refusals(tmp_path, capsys):
    line = one_error(capsys, "template", *SPACE_ARGS, "--models", "onnx", "--out", str(tmp_path / "t"),
                     "--no-progress")
    assert line.startswith("error: --models: a transformer block is exported as the ORT INT8 QDQ graph or the float "
                           "graph only: give --backend-hint int8 or fp32 with --models onnx")
    assert not (tmp_path / "t").exists()
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "mine.txt").write_text("keep")
    line = one_error(capsys, "template", *SPACE_ARGS, "--out", str(tmp_path / "t"), "--no-progress")
    assert line.startswith(f"error: {tmp_path / 't'}: --out: exists and is not an empty folder")
    assert (tmp_path / "t" / "mine.txt").read_text() == "keep"


# ---- recalibrate ---------------------------------------------------------------------------------------
def test_recalibrate_refits_a_table_of_this_machine(space, capsys, tmp_path):
    path = tmp_path / "lm-ort-int8.csv"
    table = profile_transformer_space(space, "onnxruntime-int8", out_path=path, runs=4, passes=2, n_calibration=2,
                                      pin=False)
    assert table.header.calibration_subnets == 2
    code, out, _ = cli(capsys, "recalibrate", str(path), *SPACE_ARGS, "--calibration", "3")
    assert code == 0 and out.startswith(f"{path}: calibration ") and "(fitted on 3 transformer subnets" in out
    new = TransformerLatencyTable.load(path, space=space)
    assert new.header.calibration_subnets == 3 and new.header.calibration_scale > 0
    assert {k: e.mean_ms for k, e in new.entries.items()} == {k: e.mean_ms for k, e in table.entries.items()}


def test_recalibrate_refuses_a_table_of_another_runtime(template, space, capsys, tmp_path):
    folder = tmp_path / "filled"
    _fill(template, folder, space)
    assert cli(capsys, "calibrate", str(folder / "blocks.csv"), "--timings", str(folder / "subnets.csv"))[0] == 0
    line = one_error(capsys, "recalibrate", str(folder / "blocks.csv"), *SPACE_ARGS)
    assert line.startswith(f"error: {folder / 'blocks.csv'}: backend: transformer blocks are timed on "
                           "onnxruntime-int8 or onnxruntime-fp32, not 'acme-sdk'")
    with pytest.raises(InputError, match="another 'transformer' space"):
        TransformerLatencyTable.load(folder / "blocks.csv", space=get_space("transformer", **{**OPTIONS,
                                                                                             "widths": [32]}))
