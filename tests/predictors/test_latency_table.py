"""Latency tables: every malformed table gets an error naming file, line and field; CSV/JSON round trips;
the hand-written imaginary-accelerator table loads and predicts 2/4/8-bit blocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictors.latency import Entry, LatencyPredictor, LatencyTable, TableHeader
from search_spaces import BlockSpec, InputError, get_space

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "experiments" / "latency_tables"
TINY = dict(image_size=16, stem_channels=8, stage_channels=[16], stage_strides=[2], stage_se=[False],
            stage_act=["relu"], depths=[1, 2], kernels=[3], expands=[3, 6], head_channels=0, w_bits=[2, 4, 8],
            a_bits=[8])

HEADER = """# format: qnas-latency-table/1
# device: test cpu
# backend: torch-fp32
# space: mbv3
# threads: 1
# batch: 1
# per_call_overhead_ms: 0.001
op,in_size,in_ch,out_ch,kernel,stride,mid_ch,se,act,shortcut,w_bits,a_bits,mean_ms,std_ms,count
"""
ROW1 = "conv,16,3,8,3,1,0,0,hswish,none,32,32,0.05,0.001,100"
ROW2 = "mbconv,16,8,16,3,2,24,0,relu,none,32,32,0.11,0.002,100"
ROW_LINE = 9  # 1-based line of ROW1 in HEADER + rows


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str, name: str = "t.csv", **kwargs) -> InputError:
    path = write(tmp_path, text, name)
    with pytest.raises(InputError) as info:
        LatencyTable.load(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value


def test_valid_table_loads(tmp_path):
    table = LatencyTable.load(write(tmp_path, HEADER + ROW1 + "\n" + ROW2 + "\n"))
    assert len(table) == 2 and table.header.per_call_overhead_ms == 0.001
    block = BlockSpec("conv", 16, 3, 8, kernel=3, act="hswish", w_bits=32, a_bits=32)
    assert table.get(block).mean_ms == 0.05


def test_missing_column(tmp_path):
    text = HEADER.replace(",std_ms", "") + ROW1.replace("0.001,", "") + "\n"
    err = load_error(tmp_path, text)
    assert err.line == 8 and err.field == "std_ms"
    assert "missing column(s) std_ms" in str(err)


def test_unknown_column_suggests_nearest(tmp_path):
    err = load_error(tmp_path, HEADER.replace("mean_ms", "mean_msec") + ROW1 + "\n")
    assert err.field == "mean_msec" and "did you mean 'mean_ms'" in str(err)


@pytest.mark.parametrize("value, expected", [
    ("fast", "mean_ms: expected a finite number, got 'fast'"),
    ("nan", "mean_ms: expected a finite number, got 'nan'"),
    ("-0.2", "mean_ms: got -0.2, expected a non-negative latency"),
])
def test_bad_latency_values(tmp_path, value, expected):
    err = load_error(tmp_path, HEADER + ROW1 + "\n" + ROW2.replace("0.11", value) + "\n")
    assert err.line == ROW_LINE + 1 and err.field == "mean_ms"
    assert f"t.csv:{ROW_LINE + 1}: {expected}" in str(err)


def test_negative_std_and_zero_count(tmp_path):
    err = load_error(tmp_path, HEADER + ROW1.replace("0.001,100", "-0.001,100") + "\n")
    assert err.field == "std_ms" and err.line == ROW_LINE
    err = load_error(tmp_path, HEADER + ROW1.replace(",100", ",0") + "\n")
    assert err.field == "count" and "expected a count >= 1" in str(err)


def test_duplicate_key(tmp_path):
    err = load_error(tmp_path, HEADER + ROW1 + "\n" + ROW2 + "\n" + ROW1.replace("0.05", "0.06") + "\n")
    assert err.line == ROW_LINE + 2 and err.field == "key"
    assert f"duplicate entry for block conv-i16x16x3-o8-k3-s1-m0-se0-hswish-none-w32a32 (first on line {ROW_LINE})" \
        in str(err)


def test_unknown_op_type(tmp_path):
    err = load_error(tmp_path, HEADER + ROW2.replace("mbconv", "mbconvv") + "\n")
    assert err.field == "op" and err.line == ROW_LINE
    assert "unknown op type 'mbconvv'; did you mean 'mbconv'?" in str(err)


def test_bad_signature_fields(tmp_path):
    err = load_error(tmp_path, HEADER + ROW2.replace("relu", "gelu") + "\n")
    assert err.field == "act" and err.line == ROW_LINE
    err = load_error(tmp_path, HEADER + ROW2.replace(",3,2,", ",4,2,") + "\n")
    assert err.field == "kernel" and "odd" in str(err)
    err = load_error(tmp_path, HEADER + ROW2.replace(",0,relu", ",maybe,relu") + "\n")
    assert err.field == "se"
    err = load_error(tmp_path, HEADER + ROW2 + ",extra\n")
    assert "expected 15 cells, got 16" in str(err)


@pytest.mark.parametrize("line, field, message", [
    ("# threads: two", "threads", "expected an integer, got 'two'"),
    ("# batch: 0", "batch", "got 0, expected an integer >= 1"),
    ("# calibration_scale: 0", "calibration_scale", "expected a number > 0"),
    ("# per_call_overhead_ms: -1", "per_call_overhead_ms", "expected a number >= 0"),
    ("# thread: 1", "thread", "unknown header field; did you mean 'threads'?"),
    ("# date: yesterday", "date", "expected an ISO date"),
    ("# bits_measured_as: 4->8", "bits_measured_as", "expected a JSON object of bit-widths"),
    ("# space_fingerprint: xyz", "space_fingerprint", "expected 16 hex digits"),
])
def test_bad_header_values(tmp_path, line, field, message):
    name = line[2:].split(":")[0]
    text = "".join(l for l in HEADER.splitlines(keepends=True) if not l.startswith(f"# {name}:")) + ROW1 + "\n"
    err = load_error(tmp_path, line + "\n" + text)
    assert err.field == field and err.line == 1 and message in str(err)


def test_missing_header_fields(tmp_path):
    err = load_error(tmp_path, HEADER.replace("# backend: torch-fp32\n", "") + ROW1 + "\n")
    assert err.field == "backend" and "required header field" in str(err)
    err = load_error(tmp_path, HEADER.replace("# format: qnas-latency-table/1\n", "") + ROW1 + "\n")
    assert "not a qnas latency table" in str(err)
    err = load_error(tmp_path, HEADER)
    assert "no entries" in str(err)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="latency table not found"):
        LatencyTable.load(tmp_path / "nope.csv")
    err = load_error(tmp_path, "x", name="t.yaml")
    assert "expected a .csv or .json" in str(err)


def test_table_for_another_space(tmp_path):
    space = get_space("mbv3", **TINY)
    other = get_space("mbv3", **{**TINY, "expands": [3, 4]})
    text = HEADER + ROW1 + "\n"
    assert load_error(tmp_path, text, space=get_space("resnet")).field == "space"
    err = load_error(tmp_path, HEADER.replace("# batch: 1", f"# space_fingerprint: {other.fingerprint()}") + ROW1
                     + "\n", space=space)
    assert err.field == "space_fingerprint" and err.line == 6
    assert f"fingerprint {other.fingerprint()}, the configured space has {space.fingerprint()}" in str(err)


def test_backend_mismatch_is_an_error_device_mismatch_a_warning(tmp_path):
    table = LatencyTable.load(write(tmp_path, HEADER + ROW1 + "\n"))
    with pytest.raises(InputError, match="measured on backend 'torch-fp32', the config asks for 'onnxruntime-int8'"):
        table.check_target(backend="onnxruntime-int8")
    with pytest.warns(UserWarning, match="table device is 'test cpu'"):
        table.check_target(backend="torch-fp32", device="other cpu")


def test_json_errors_name_lines(tmp_path):
    table = LatencyTable.load(write(tmp_path, HEADER + ROW1 + "\n" + ROW2 + "\n"))
    text = table.to_json()
    lines = text.splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if '"mbconv"' in line)
    err = load_error(tmp_path, text.replace('"mean_ms": 0.11', '"mean_ms": "slow"'), name="t.json")
    assert err.line == bad_line and err.field == "mean_ms"
    err = load_error(tmp_path, text.replace('"std_ms": 0.002, ', ""), name="t.json")
    assert err.line == bad_line and err.field == "std_ms" and "missing key(s) std_ms" in str(err)
    err = load_error(tmp_path, text.replace('"threads": 1', '"threads": -1'), name="t.json")
    assert err.field == "threads" and err.line == next(i for i, l in enumerate(lines, 1) if '"threads"' in l)
    err = load_error(tmp_path, text[:-10], name="t.json")
    assert "invalid JSON" in str(err) and err.line is not None


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_round_trip(tmp_path, suffix):
    header = TableHeader(device="cpu, with: colons", backend="onnxruntime-int8", space="mbv3", dtype="int8",
                         threads=2, batch=4, clock="wall", per_call_overhead_ms=0.006, calibration_scale=0.93,
                         calibration_offset_ms=-0.012, calibration_subnets=10, date="2025-01-01T10:00:00+00:00",
                         space_fingerprint="0123456789abcdef", space_options='{"image_size": 32}',
                         bits_measured_as={4: 8, 6: 8, 32: 8}, notes="line one\nline two")
    blocks = [BlockSpec("mbconv", 8, 16, 16, kernel=k, mid_ch=48, se=se, act="hswish", shortcut="identity")
              for k in (3, 5) for se in (False, True)]
    table = LatencyTable(header, [Entry(b, 0.1 + i / 3, i / 7, 100 + i) for i, b in enumerate(blocks)])
    path = table.save(tmp_path / f"table{suffix}")
    back = LatencyTable.load(path)
    assert back.entries == table.entries
    assert back.header == TableHeader(**{**header.__dict__, "notes": "line one line two"}) if suffix == ".csv" \
        else back.header == header
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize("name", ["imaginary_npu.csv", "imaginary_npu.json"])
def test_imaginary_accelerator_table_predicts_2_4_8_bit_blocks(name):
    space = get_space("mbv3", **TINY)
    table = LatencyTable.load(EXAMPLES / name, space=space)
    assert {e.spec.w_bits for e in table.entries.values()} == {2, 4, 8} and table.header.bits_measured_as == {}
    predictor = LatencyPredictor(table, strict=True)
    largest = space.largest()
    for bits in (2, 4, 8):
        genome = space.make({**largest.as_dict(), "s1.b1.w_bits": bits, "s1.b2.w_bits": bits})
        blocks = space.blocks(genome)
        expected = sum(table.get(b).mean_ms for b in blocks) + 0.01  # no overhead, scale 1, offset 0.01
        estimate = predictor.predict(blocks)
        assert estimate.ms == pytest.approx(expected) and not estimate.used_fallback
    genomes = [space.sample(np.random.default_rng(s)) for s in range(20)]
    batch = predictor.predict_genomes(space, genomes)
    assert batch.ms == pytest.approx([predictor.predict(space.blocks(g)).ms for g in genomes])
    assert json.loads(table.header.space_options)["w_bits"] == [2, 4, 8]


def test_unfilled_template_rows_count_as_missing_blocks(tmp_path):
    text = HEADER + ROW1 + "\n" + ROW2.replace("0.11,0.002,100", ",,") + "\n"
    table = LatencyTable.load(write(tmp_path, text))
    assert len(table) == 1 and list(table.unfilled) == ["mbconv-i16x16x8-o16-k3-s2-m24-se0-relu-none-w32a32"]
    for suffix in (".csv", ".json"):  # written back empty (JSON: null), so a table can be filled bit by bit
        back = LatencyTable.load(table.save(tmp_path / f"back{suffix}"))
        assert back.entries == table.entries and back.unfilled.keys() == table.unfilled.keys()
    assert '"mean_ms": null, "std_ms": null, "count": null' in (tmp_path / "back.json").read_text()


def test_partly_filled_rows_and_unfilled_tables_are_errors(tmp_path):
    err = load_error(tmp_path, HEADER + ROW1 + "\n" + ROW2.replace("0.11,0.002,100", "0.11,,") + "\n")
    assert err.line == ROW_LINE + 1 and err.field == "std_ms" and "a timed block needs mean_ms, std_ms and count" \
        in str(err)
    err = load_error(tmp_path, HEADER + ROW1.replace("0.05,0.001,100", ",,") + "\n")
    assert err.field == "entries" and "none of its 1 rows has mean_ms, std_ms, count filled in yet" in str(err)
    err = load_error(tmp_path, HEADER + ROW1 + "\n" + ROW1.replace("0.05,0.001,100", ",,") + "\n")
    assert err.field == "key" and "duplicate entry" in str(err)  # an unfilled row is still a row
