"""Every bad input named: one ``error: <file>[:line]: <key path>: ...`` line, exit 2, within a second.

The property test draws cases from ``nas.fuzzing`` (the generators the fuzz benchmark uses); the
tests below it pin each class of bad input to its message and to where it is caught.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.cli import main
from nas.config import config_to_yaml
from nas.kinds import load_experiment
from nas.fuzzing import FAMILIES, TIME_LIMIT_S, base_config, base_table, generate, run_case, warmed_up
from nas.rundir import check_new_run_dir, read_manifest
from search_spaces import InputError, get_space
from search_spaces.inputs import MAX_NESTING, MAX_YAML_NODES, parse_json, parse_yaml, read_text

KINDS = [(family, kind) for family, kinds in FAMILIES.items() for kind in kinds]


@pytest.fixture(scope="module", autouse=True)
def _imports_loaded():
    """First calls import torch, scikit-learn and pymoo; the time limit is about handling input, not that."""
    with warmed_up():
        yield


@settings(max_examples=150, deadline=timedelta(seconds=TIME_LIMIT_S),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(KINDS), st.randoms(use_true_random=False))
def test_malformed_inputs_get_one_error_line_naming_them(family_kind, rng):
    outcome = run_case(generate(*family_kind, rng))
    assert outcome.handled, (outcome.kind, outcome.problem, outcome.stderr[-3000:])


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error(capsys, *argv: str) -> str:
    code, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def write_config(folder: Path, data: dict | None = None, name: str = "exp.yaml") -> Path:
    """The fuzz base config (with its latency table) written into ``folder``."""
    (folder / "table.csv").write_text(base_table(".csv"))
    text = yaml.safe_dump(data or base_config(), sort_keys=False).replace("@DIR@", str(folder))
    path = folder / name
    path.write_text(text)
    return path


# ---- the safe reader ------------------------------------------------------------------------------
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))


@pytest.mark.parametrize("text, fragments", [
    (LAUGHS, ["c.yaml:", f"more than {MAX_YAML_NODES} values"]),
    ("dataset: &d {name: digits, options: {again: *d}}\n", ["c.yaml:1: dataset.options.again:", "recursive alias"]),
    ("a: " + "[" * 5000 + "]" * 5000, ["c.yaml:1:", f"nested more than {MAX_NESTING} levels deep"]),
    ("a: " + "{b: " * 300 + "1" + "}" * 300, ["c.yaml:1: a.b.b.b", f"more than {MAX_NESTING} levels"]),
    ("".join(f"a{i}: &a{i} [[{'*a' + str(i - 1) if i else 1}]]\n" for i in range(40)), ["c.yaml:32: a31[0][0]:",
                                                                                       "levels deep"]),
    ("a: " + "1" * 5000, ["c.yaml:1:", "invalid YAML: cannot read the value", "4300 digits"]),
    ("a: !!python/object:os.system ls", ["c.yaml:1:", "invalid YAML"]),
])
def test_yaml_limits(text, fragments):
    with pytest.raises(InputError) as info:
        parse_yaml(text, "c.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_yaml_aliases_within_the_limits_still_work():
    data, _ = parse_yaml("base: &b {x: 1}\nuse: *b\nmerged: {<<: *b, y: 2}\n", "c.yaml")
    assert data == {"base": {"x": 1}, "use": {"x": 1}, "merged": {"x": 1, "y": 2}}


@pytest.mark.parametrize("content, fragments", [
    (b"\x00\x01binary", ["f.txt:1: binary data (a NUL byte at offset 0)"]),
    (b"name: caf\xe9\n", ["f.txt:1: not UTF-8 text (byte 0xe9 at offset 9)"]),
    (b"a: 1\nb: \xff\n", ["f.txt:2: not UTF-8 text"]),
    (b"x" * 2000, ["f.txt: is 2 KiB; a file is at most 1 KiB"]),
])
def test_read_text_refuses_binary_misencoded_and_oversized_files(tmp_path, content, fragments):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_text(path, max_bytes=1024)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_read_text_drops_a_bom_and_names_folders(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_text(tmp_path / "f.txt") == "a: 1\n"
    with pytest.raises(InputError, match="is a folder; expected a config"):
        read_text(tmp_path, what="config")


@pytest.mark.parametrize("text, fragment", [
    ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_NESTING} levels deep"),
    ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "levels deep"),
    ("1" * 5000, "invalid JSON: Exceeds the limit (4300 digits)"),
    ('{"a": 1,}', "t.json:1: invalid JSON"),
])
def test_json_limits(text, fragment):
    with pytest.raises(InputError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_json(text, "t.json")


# ---- configs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where, value, fragments", [
    (("search_space", "options", "image_size"), float("inf"),
     [":12: search_space.options.image_size: got inf; expected a finite number"]),
    (("dataset", "options", "max_train"), float("nan"), ["dataset.options.max_train: got nan"]),
    (("search", "options", "population_size"), 10**30, ["search.options.population_size:", "at most 2**53"]),
    (("search_space", "options", "image_size"), 1_000_000,
     ["search_space.options.image_size: got 1000000, expected a positive integer (at most 4096)"]),
    (("search_space", "options", "depths"), list(range(1, 1000)),
     ["search_space.options.depths: got a list of 999 values, expected at most 64"]),
    (("search_space", "options", "stage_channels"), [16, 10**6],
     ["search_space.options.stage_channels:", "expected integers in 1..8192"]),
    (("search", "budget"), 10**12, ["search.budget: got 1000000000000; expected less than or equal to 1000000"]),
    (("search", "constraints"), ["params >= 1e999"], ["search.constraints[0]:", "is not a finite number"]),
    (("search_space", "options", "stage_strides"), 2, ["search_space.options.stage_strides: got 2"]),
])
def test_config_values_out_of_bounds_are_named(tmp_path, capsys, where, value, fragments):
    data = base_config()
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    path = write_config(tmp_path, data)
    err = one_error(capsys, "validate", path)
    assert err.startswith(f"error: {path}:")
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("section, option", [("dataset", "seed"), ("search_space", "source"),
                                             ("search", "objectives")])
def test_options_that_qnas_passes_itself_are_refused(tmp_path, capsys, section, option):
    data = base_config()
    data[section]["options"][option] = 1
    err = one_error(capsys, "validate", write_config(tmp_path, data))
    assert f"{section}.options.{option}: {option!r} is set by qnas itself" in err


def test_reserved_options_are_the_explicit_parameters_of_their_consumers():
    import inspect

    from nas.config import RESERVED_OPTIONS
    from nas.searchers import get_searcher
    from supernets.data import load_dataset

    consumers = {"dataset": load_dataset, "search_space": get_space, "search": get_searcher}
    for (section, _), reserved in RESERVED_OPTIONS.items():
        explicit = [p.name for p in inspect.signature(consumers[section]).parameters.values()
                    if p.kind is not inspect.Parameter.VAR_KEYWORD]
        assert sorted(reserved) == sorted(explicit), section


@pytest.mark.parametrize("override, fragment", [
    ("search.budget=.inf", "--set search.budget=.inf: search.budget: got inf"),
    ("search_space.options.depths=[" + ",".join(map(str, range(10**5))) + "]", "--set search_space.options.depths"),
    ("search.options=&r [*r]", "recursive alias"),
])
def test_bad_overrides_are_named_and_clipped(tmp_path, capsys, override, fragment):
    err = one_error(capsys, "validate", write_config(tmp_path), "--set", override)
    assert fragment in err and len(err) < 400, err


def test_config_size_is_capped(tmp_path, capsys):
    path = write_config(tmp_path)
    path.write_text("#" + "x" * 80_000 + "\n" + path.read_text())
    assert f"{path}: is 79 KiB; a config is at most 64 KiB" in one_error(capsys, "validate", path)


# ---- output folders ------------------------------------------------------------------------------------
def test_out_at_a_folder_that_is_not_a_run_is_refused_and_left_alone(tmp_path, capsys):
    config = write_config(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    err = one_error(capsys, "run", config, "--out", mine)
    assert f"{mine}: --out: is not empty and holds no qnas run; nothing was written" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "years of work"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_new_run_dir(empty) == empty.resolve()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_unwritable_output_root_is_named_before_any_work(tmp_path, capsys, command):
    (tmp_path / "file.txt").write_text("x")
    data = base_config()
    data["output"]["root"] = str(tmp_path / "file.txt" / "runs")
    config = write_config(tmp_path, data)
    err = one_error(capsys, command, config)
    assert f"{config}:" in err and "output.root: cannot create" in err and "is a file, not a folder" in err


def test_unwritable_out_is_named(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    err = one_error(capsys, "run", write_config(tmp_path), "--out", tmp_path / "file.txt" / "run")
    assert "--out: cannot create" in err


# ---- damaged run folders --------------------------------------------------------------------------------
@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A run folder as ``qnas run`` leaves it, without running: config, manifest, one journal record."""
    data = base_config()
    data["supernet"] = {"epochs": 1, "warmup_epochs": 0}
    data["search"]["objectives"] = [{"metric": "size_kb"}, {"metric": "bitops"}]
    config = load_experiment(write_config(tmp_path, data)).config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config_to_yaml(config))
    (run / "manifest.json").write_text(json.dumps({"status": "interrupted", "resumes": []}))
    space = get_space("mbv3", **config.search_space.options)
    record = {"key": space.smallest().key, "genome": space.smallest().to_dict(),
              "metrics": {"size_kb": 1.0, "bitops": 2.0, "params": 5000.0}, "sources": {}, "seconds": 0.1,
              "batch": 0, "finished_at": "t"}
    (run / "trials.jsonl").write_text(json.dumps(record) + "\n")
    return run


def test_a_sound_run_folder_prints_its_front(run_folder, capsys):
    assert main(["pareto", str(run_folder)]) == 0


@pytest.mark.parametrize("file, content, command, fragments", [
    ("manifest.json", "{\"status\": ", "resume", ["manifest.json:1: damaged manifest: invalid JSON"]),
    ("manifest.json", '{"resumes": 3}', "resume", ["manifest.json: resumes: damaged manifest: expected a JSON array"]),
    ("manifest.json", "[" * 10_000, "resume", ["manifest.json: damaged manifest: nested more than"]),
    ("pareto.json", '{"front": [1]}', "export", ["pareto.json: front[0]: damaged: expected an object"]),
    ("pareto.json", b"\x00\xff", "export", ["pareto.json:1: binary data"]),
    ("config.yaml", b"\xff\xfe", "pareto", ["config.yaml:1: not UTF-8 text"]),
    ("trials.jsonl", '{"key": 1, "genome": {}, "metrics": {}, "sources": {}, "seconds": 0, "batch": 0, '
                     '"finished_at": "t"}\n', "pareto", ["trials.jsonl:1: key: damaged journal record: key must be str, got int"]),
    ("trials.jsonl", '{"key": "k", "genome": {}, "metrics": {"size_kb": "big"}, "sources": {}, "seconds": 0, '
                     '"batch": 0, "finished_at": "t"}\n', "pareto",
     ["trials.jsonl:1: metrics: damaged journal record: metric 'size_kb' must be a number, got 'big'"]),
])
def test_damaged_run_files_are_named(run_folder, capsys, file, content, command, fragments):
    path = run_folder / file
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    argv = {"resume": ["run", "--resume", run_folder], "export": ["export", run_folder],
            "pareto": ["pareto", run_folder]}[command]
    err = one_error(capsys, *argv)
    for fragment in fragments:
        assert fragment in err, err


def test_read_manifest_checks_the_types_code_relies_on(tmp_path):
    (tmp_path / "manifest.json").write_text('{"latency_tables": []}')
    with pytest.raises(InputError, match="latency_tables: damaged manifest: expected a JSON object, got array"):
        read_manifest(tmp_path)


# ---- command-line numbers ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, fragment", [
    (["latency", "profile", "--space", "mbv3", "--backend", "torch-fp32", "--out", "t.csv", "--batch", "0"],
     "error: --batch: got 0; expected an integer >= 1"),
    (["latency", "profile", "--space", "mbv3", "--backend", "torch-fp32", "--out", "t.csv", "--threads", "-2"],
     "error: --threads: got -2; expected an integer >= 1"),
    (["latency", "profile", "--space", "mbv3", "--backend", "torch-fp32", "--out", "t.csv", "--seed", "-1"],
     "error: --seed: got -1; expected an integer >= 0"),
    (["latency", "profile", "--space", "mbv3", "--backend", "torch-fp32", "--out", "t.csv", "--runs=--"],
     "error: --runs: got '--'; expected a value"),
    (["latency", "recalibrate", "t.csv", "--space", "mbv3", "--calibration", "1e3"],
     "error: --calibration: got '1e3'; expected an integer >= 1"),
    (["export", "run", "--rank", "0"], "error: --rank: got 0; expected an integer >= 1"),
    (["latency", "check", "t.csv", "--space", "mbv3", "--space-options", '{"image_size": NaN}'],
     "error: --space-options: image_size: got nan"),
    (["latency", "check", "t.csv", "--space", "mbv3", "--space-options", '{"depths": [1, 2, 3, 0]}'],
     "error: --space-options: depths: got [1, 2, 3, 0], expected integers in 1..64"),
])
def test_cli_numbers_must_be_positive(capsys, argv, fragment):
    assert one_error(capsys, *argv).startswith(fragment)


# ---- other input files ---------------------------------------------------------------------------------
def test_damaged_checkpoint_is_named(tmp_path):
    import torch

    from supernets.checkpoint import FORMAT, read_checkpoint

    path = tmp_path / "s.pt"
    torch.save({"format": FORMAT, "space": {"name": "mbv3", "options": []}, "fingerprint": "x", "image_size": 8,
                "config": {}, "epoch": 0, "model": {}, "history": []}, path)
    with pytest.raises(InputError, match=r"s\.pt: space\.options: damaged checkpoint: expected dict, got list"):
        read_checkpoint(path)


def test_damaged_lookup_table_and_sensitivity_table_are_named(tmp_path):
    from nas.spaceevo.lut import QtLut
    from predictors.accuracy.sensitivity import QuantSensitivity

    (tmp_path / "lut.json").write_text("[" * 10_000)
    with pytest.raises(InputError, match=r"lut\.json: nested more than"):
        QtLut.load(tmp_path / "lut.json")
    (tmp_path / "sens.json").write_bytes(b"\x00")
    with pytest.raises(InputError, match=r"sens\.json:1: not a JSON quantization-sensitivity table \(binary data"):
        QuantSensitivity.load(tmp_path / "sens.json", get_space("mbv3"))


def test_oversized_table_is_refused_without_reading_it(tmp_path):
    from predictors.latency import LatencyTable

    path = tmp_path / "t.csv"
    with open(path, "wb") as handle:
        handle.truncate(2**33)  # sparse: 8 GiB of nothing
    with pytest.raises(InputError, match=r"t\.csv: is 8192\.0 MiB; a latency table is at most 32\.0 MiB"):
        LatencyTable.load(path)
