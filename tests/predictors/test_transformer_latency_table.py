"""Transformer latency tables: a tiny space profiled on ONNX Runtime INT8, CSV round trip, predictions as
overhead + Σ rows, W4 and W8 sharing a row, every malformed file one InputError naming file, line and field,
a table of another space refused, and the ``latency:`` section of a transformer run (profiled, predicted,
the front timed end to end)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from nas.transformer_latency import profile_transformer_space
from predictors.latency.transformer_table import (TransformerLatencyPredictor, TransformerLatencyTable,
                                                  distinct_transformer_blocks, transformer_bits_measured_as)
from search_spaces import InputError, get_space
from search_spaces.testing import TINY_TRANSFORMER_LATENCY

TINY = TINY_TRANSFORMER_LATENCY
TINY_VIT = dict(front="vit", image_size=8, in_channels=1, patch_size=4, num_classes=10, pooling="cls", depths=[1, 2],
                widths=[8], heads=[1], mlp_ratios=[2], w_bits=[8], a_bits=[8])
FAST = dict(runs=4, passes=2, warmup=1)


@pytest.fixture(scope="module")
def space():
    return get_space("transformer", **TINY)


@pytest.fixture(scope="module")
def table(space):
    return profile_transformer_space(space, "onnxruntime-int8", n_calibration=0, **FAST)


@pytest.fixture()
def saved(table, tmp_path):
    return table.save(tmp_path / "t.csv")


def test_profiled_table_has_every_block_of_the_space(space, table):
    # embed and head per width, attention per width x heads, MLP per width x ratio; bits all timed as 8
    assert len(table) == 2 + 2 * 2 + 2 + 2
    assert table.missing(space) == []
    h = table.header
    assert (h.format, h.backend, h.dtype, h.threads, h.batch, h.clock) == (
        "qnas-transformer-latency-table/1", "onnxruntime-int8", "int8", 1, 1, "thread")
    assert h.bits_measured_as == {4: 8, 32: 8} and h.space_fingerprint == space.fingerprint()
    assert h.per_call_overhead_ms > 0 and (h.calibration_scale, h.calibration_offset_ms) == (1.0, 0.0)
    assert {e.block.op for e in table.entries.values()} == {"embed", "attention", "mlp", "head"}
    assert all(e.mean_ms >= 0 and e.std_ms >= 0 and e.count >= 1 for e in table.entries.values())
    assert sum(e.mean_ms for e in table.entries.values()) > 0


def test_csv_round_trip(space, table, saved):
    text = saved.read_text()
    assert "# bits_measured_as: {\"4\": 8, \"32\": 8}" in text
    assert "op,front,seq_len,width,inner,heads,bits,mean_ms,std_ms,count" in text
    assert "attention,lm,8,16,16,2,w8a8.w8a8," in text
    loaded = TransformerLatencyTable.load(saved, space=space)
    assert loaded.header == table.header
    assert {k: (e.mean_ms, e.std_ms, e.count) for k, e in loaded.entries.items()} == \
        {k: (e.mean_ms, e.std_ms, e.count) for k, e in table.entries.items()}
    assert loaded.to_csv() == text


def test_predict_is_one_overhead_plus_the_blocks_rows(space, table, saved):
    loaded = TransformerLatencyTable.load(saved, space=space)
    predictor = TransformerLatencyPredictor(loaded, space)
    rng = np.random.default_rng(0)
    for genome in [space.sample(rng) for _ in range(10)] + [space.smallest(), space.largest()]:
        blocks = space.transformer_blocks(genome)
        rows = [loaded.entries[loaded.key_for(b)].mean_ms for b in blocks]
        estimate = predictor.predict(genome)
        assert estimate.n_blocks == len(blocks) == 2 + 2 * int(genome["depth"])
        assert estimate.ms == pytest.approx(loaded.header.per_call_overhead_ms + sum(rows))
        assert estimate.ms == estimate.raw_ms > 0
    scaled = loaded.with_header(calibration_scale=2.0, calibration_offset_ms=0.1)
    calibrated = TransformerLatencyPredictor(scaled, space)
    genome = space.largest()
    assert calibrated.predict(genome).ms == pytest.approx(2 * predictor.predict(genome).ms + 0.1)


def test_w4_and_w8_blocks_share_a_row_on_ort_int8(space, table):
    genome = space.largest()
    w_genes = [g.name for g in space.genes if g.name.endswith(".w_bits") and space.is_active(genome, g)]
    w4, w8 = genome.with_values({n: 4 for n in w_genes}), genome.with_values({n: 8 for n in w_genes})
    b4, b8 = space.transformer_blocks(w4)[1], space.transformer_blocks(w8)[1]
    assert b4.key() != b8.key() and "w4a8" in b4.key()
    assert table.key_for(b4) == table.key_for(b8) == b8.key()
    predictor = TransformerLatencyPredictor(table, space)
    assert predictor.predict(w4).ms == predictor.predict(w8).ms
    assert transformer_bits_measured_as(space, "fp32") == {4: 32, 8: 32}
    fp32_keys = {b.key() for b in distinct_transformer_blocks(space, transformer_bits_measured_as(space, "fp32"))}
    assert len(fp32_keys) == len(table) and all(k.endswith("w32a32") or "w32a32." in k for k in fp32_keys)


def test_a_missing_block_names_its_key(space, table):
    genome = space.largest()
    block = space.transformer_blocks(genome)[2]  # the first MLP
    key = table.key_for(block)
    partial = TransformerLatencyTable(table.header, [e for k, e in table.entries.items() if k != key])
    assert partial.missing(space) == [key]
    with pytest.raises(InputError, match=rf"no entry for block {key}"):
        TransformerLatencyPredictor(partial, space).predict(genome)
    estimate = TransformerLatencyPredictor(partial, space, fallback=True).predict(genome)
    assert estimate.missing_keys == (key,) and estimate.used_fallback and estimate.ms > 0
    assert not TransformerLatencyPredictor(table, space, fallback=True).predict(genome).used_fallback
    no_mlp = TransformerLatencyTable(table.header, [e for e in table.entries.values() if e.block.op != "mlp"])
    with pytest.raises(InputError, match=r"no entry for block mlp-.* and no row of op 'mlp' to estimate it from"):
        TransformerLatencyPredictor(no_mlp, space, fallback=True).predict(genome)


def _edit(text: str, old: str, new: str) -> tuple[str, int]:
    """``text`` with the first line containing ``old`` edited, and that line's 1-based number."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if old in line)
    lines[at] = lines[at].replace(old, new, 1)
    return "\n".join(lines) + "\n", at + 1


def _first_row(text: str, prefix: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if line.startswith(prefix)) + 1


@pytest.mark.parametrize("what, field", [
    ("bad number", "mean_ms"), ("unknown op", "op"), ("bad bits", "bits"), ("bad width", "width"),
    ("missing column", "std_ms"), ("cnn format", "format"), ("unknown header", "clocks"),
    ("duplicate", "key"), ("other front", "front"), ("wrong bits count", "bits"),
])
def test_malformed_tables_give_one_error_naming_file_line_and_field(space, saved, what, field):
    text = saved.read_text()
    row = _first_row(text, "mlp,")
    if what == "bad number":
        lines = text.splitlines()
        cells = lines[row - 1].split(",")
        cells[7] = "fast"
        lines[row - 1] = ",".join(cells)
        text, line = "\n".join(lines) + "\n", row
    elif what == "unknown op":
        text, line = _edit(text, "mlp,lm", "ffn,lm")
    elif what == "bad bits":
        text, line = _edit(text, "w8a8.w8a8", "w8/a8")
    elif what == "bad width":
        text, line = _edit(text, "mlp,lm,8,8,", "mlp,lm,8,eight,")
    elif what == "missing column":
        text = text.replace(",std_ms", "")
        line = _first_row(text, "op,")
    elif what == "cnn format":
        text, line = _edit(text, "qnas-transformer-latency-table/1", "qnas-latency-table/1")
    elif what == "unknown header":
        text, line = _edit(text, "# clock:", "# clocks:")
    elif what == "duplicate":
        lines = text.splitlines()
        lines.append(lines[row - 1])
        text, line = "\n".join(lines) + "\n", len(lines)
    elif what == "other front":
        text, line = _edit(text, "mlp,lm,", "mlp,vit,")
    else:  # an MLP row with one (w, a) pair
        text, line = _edit(text, "mlp,lm,8,8,16,0,w8a8.w8a8", "mlp,lm,8,8,16,0,w8a8")
    saved.write_text(text)
    with pytest.raises(InputError) as info:
        TransformerLatencyTable.load(saved, space=space)
    err = info.value
    assert (err.field, err.line) == (field, line), str(err)
    assert str(saved) in str(err) and "\n" not in str(err)
    if what == "missing column":
        assert "missing column(s) std_ms" in str(err)
    if what == "unknown op":
        assert "unknown op 'ffn'" in str(err)


def test_a_table_of_another_space_is_refused(space, saved, tmp_path):
    other = get_space("transformer", **dict(TINY, widths=[8, 16, 24], heads=[1, 2]))
    with pytest.raises(InputError) as info:
        TransformerLatencyTable.load(saved, space=other)
    assert info.value.field == "space_fingerprint" and str(saved) in str(info.value)
    vit = get_space("transformer", **TINY_VIT)
    with pytest.raises(InputError, match="space_fingerprint"):
        TransformerLatencyTable.load(saved, space=vit)
    cnn = get_space("mbv3")
    with pytest.raises(InputError, match=r"t\.csv:\d+: space: the table is for space 'transformer', not 'mbv3'"):
        TransformerLatencyTable.load(saved, space=cnn)
    with pytest.raises(InputError, match="expected a .csv"):
        TransformerLatencyTable.load(tmp_path / "t.json", space=space) if (tmp_path / "t.json").write_text("{}") \
            else None


def test_vit_blocks_profile_on_onnxruntime_fp32():
    vit = get_space("transformer", **TINY_VIT)
    table = profile_transformer_space(vit, "onnxruntime-fp32", n_calibration=2, **FAST)
    assert table.header.bits_measured_as == {8: 32} and table.missing(vit) == []
    assert {e.block.key() for e in table.entries.values()} >= {"embed-vit-t5-d8-i16-h0-w32a32",
                                                              "head-vit-t5-d8-i10-h0-w32a32"}
    assert table.header.calibration_subnets == 2 and table.header.calibration_scale > 0
    assert TransformerLatencyPredictor(table, vit).predict(vit.largest()).ms > 0
    with pytest.raises(InputError, match="backend: transformer blocks are timed on onnxruntime-int8 or"):
        profile_transformer_space(vit, "torch-int8", n_calibration=0, **FAST)


# ---- the latency section of a run ---------------------------------------------------------------------
def _config(folder, latency):
    data = {"name": "tlat", "dataset": {"name": "digits"},
            "search_space": {"name": "transformer", "options": dict(TINY_VIT, depths=[1, 2], widths=[8, 16],
                                                                    heads=[1, 2], w_bits=[4, 8])},
            "latency": latency, "output": {"root": str(folder / "runs"), "export_top": 0},
            "search": {"algorithm": "random", "budget": 8, "options": {"batch_size": 4},
                       "objectives": [{"metric": "size_kb"}, {"metric": "latency_ms"}]}}
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_latency_section_of_a_transformer_run(tmp_path):
    from nas.kinds import load_experiment
    from nas.runner import prepare, start_run

    cache = tmp_path / "cache"
    latency = {"profile": {"backend": "onnxruntime-int8", "runs": 5, "passes": 2, "cache_dir": str(cache),
                           "recalibrate": False}}
    outcome = start_run(_config(tmp_path, latency))
    trials = [json.loads(line) for line in (outcome.run_dir / "trials.jsonl").open()]
    assert trials and all(t["metrics"]["latency_ms"] > 0 and t["metrics"]["latency_ms_fallback"] == 0.0
                          for t in trials)
    assert trials[0]["sources"]["latency_ms"] == "predicted"
    copy = outcome.run_dir / "latency" / "latency_ms.csv"
    cached = list(cache.glob("transformer-*-onnxruntime-int8-t1-b1.csv"))
    assert len(cached) == 1 and copy.is_file()
    space = get_space("transformer", **dict(TINY_VIT, depths=[1, 2], widths=[8, 16], heads=[1, 2], w_bits=[4, 8]))
    table = TransformerLatencyTable.load(copy, space=space)
    predictor = TransformerLatencyPredictor(table, space)
    for t in trials:
        assert t["metrics"]["latency_ms"] == pytest.approx(predictor.predict(space.from_dict(t["genome"])).ms)
    pareto = json.loads((outcome.run_dir / "pareto.json").read_text())
    front = pareto["front"] if isinstance(pareto, dict) else pareto
    assert front and all(r["metrics"]["latency_measured_ms"] > 0 and r["metrics"]["latency_pred_ms"] > 0
                         for r in front)
    # a table file: used as is; one lacking a block uses the flagged fallback, or is refused when strict
    note = prepare(load_experiment(_config(tmp_path, {"table": str(copy)}))).latency_notes[0]
    assert note.startswith("latency_ms: latency_ms.csv (onnxruntime-int8 on ") and "all 10 transformer blocks" in note
    lines = copy.read_text().splitlines()
    first_mlp = next(i for i, line in enumerate(lines) if line.startswith("mlp,"))
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(lines[:first_mlp] + lines[first_mlp + 1:]) + "\n")
    note = prepare(load_experiment(_config(tmp_path, {"table": str(partial)}))).latency_notes[0]
    assert "9 of 10 transformer blocks; the 1 others estimated by the fallback" in note
    with pytest.raises(InputError, match=r"latency\.table: .*partial\.csv: the strict table lacks 1 of the 10 "
                                         r"transformer blocks \(first: mlp-vit-"):
        prepare(load_experiment(_config(tmp_path, {"table": str(partial), "strict": True})))
    outcome = start_run(_config(tmp_path, {"table": str(partial)}))
    flags = [json.loads(line)["metrics"]["latency_ms_fallback"] for line in (outcome.run_dir / "trials.jsonl").open()]
    assert set(flags) <= {0.0, 1.0}
    no_mlp = tmp_path / "no_mlp.csv"
    no_mlp.write_text("\n".join(line for line in lines if not line.startswith("mlp,")) + "\n")
    with pytest.raises(InputError, match=r"latency\.table: .*no_mlp\.csv: no row of op 'mlp' to estimate it from; "
                                         r"the table lacks 2 of the 10"):
        prepare(load_experiment(_config(tmp_path, {"table": str(no_mlp)})))
    with pytest.raises(InputError, match=r"latency\.profile\.backend: transformer blocks are timed on"):
        prepare(load_experiment(_config(tmp_path, {"profile": {"backend": "torch-int8"}})))


def test_the_latency_command_profiles_and_checks_transformer_tables(tmp_path, capsys):
    from nas.latency_cli import main as latency_main

    options = json.dumps({"front": "lm", "vocab_size": 11, "seq_len": 8, "depths": [1], "widths": [16],
                          "heads": [2], "mlp_ratios": [1, 2]})
    out = tmp_path / "t.csv"
    space_args = ["--space", "transformer", "--space-options", options]
    assert latency_main(["latency", "profile", *space_args, "--backend", "onnxruntime-int8", "--runs", "3",
                         "--passes", "2", "--calibration", "2", "--no-progress", "--out", str(out)]) == 0
    table = TransformerLatencyTable.load(out, space=get_space("transformer", **json.loads(options)))
    assert len(table) == 5  # embed, attention, two MLPs, head
    assert latency_main(["latency", "check", str(out), *space_args, "--strict"]) == 0
    assert "blocks present: 5 of the 5" in capsys.readouterr().out
    wider = json.dumps({**json.loads(options), "mlp_ratios": [1, 2, 3]})
    assert latency_main(["latency", "check", str(out), "--space", "transformer", "--space-options", wider]) == 2
    assert "another 'transformer' space" in capsys.readouterr().err
    assert latency_main(["latency", "profile", *space_args, "--backend", "torch-int8", "--out",
                         str(tmp_path / "u.csv")]) == 2
    assert "error: --backend: transformer blocks are timed on onnxruntime" in capsys.readouterr().err


def test_checking_a_huge_file_without_line_breaks_does_not_read_it(tmp_path):
    """The format sniffing reads a bounded prefix: a 16 GiB sparse file is refused by size, in bounded memory."""
    import subprocess
    import sys

    huge = tmp_path / "t.csv"
    with open(huge, "wb") as handle:
        handle.truncate(16 * 2**30)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30)); "
            "from nas.latency_cli import main; sys.exit(main(['latency', 'check', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(huge)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a latency table is at most 32.0 MiB" in done.stderr, done.stderr[-2000:]
