"""Experiment configs: every malformed input gets one clear error naming where and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from nas.config import ExperimentConfig, apply_overrides, config_diff, config_to_yaml
from nas.kinds import load_experiment
from nas.runner import prepare, summary
from search_spaces.errors import InputError
from search_spaces.testing import TINY_MBV3_DEFAULT_CHOICES

ROOT = Path(__file__).resolve().parents[2]

SPACE = yaml.safe_dump({"search_space": {"name": "mbv3", "options": TINY_MBV3_DEFAULT_CHOICES}}, sort_keys=False,
                       default_flow_style=None)  # block style, lists in brackets

GOOD = f"""\
name: tiny
seed: 3
dataset:
  name: digits
{SPACE}search:
  algorithm: nsga2
  options: {{population_size: 4}}
  objectives:
    - {{metric: size_kb, direction: min}}
    - {{metric: bitops, direction: min}}
  constraints: ["params >= 1000"]
  budget: 12
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(InputError) as info:
        load_experiment(path, overrides)
    return str(info.value)


SEARCH_LINE = GOOD.splitlines().index("search:") + 1

# (what is wrong, replace this in GOOD, with this, expected fragments of the one error line)
MALFORMED = [
    ("unknown top-level key", "search:\n", "serach:\n", [f"exp.yaml:{SEARCH_LINE}", "serach", "unknown key 'serach'",
                                                         "did you mean 'search'"]),
    ("unknown nested key", "direction: min}\n    - {metric: bitops", "dirction: min}\n    - {metric: bitops",
     ["search.objectives[0].dirction", "did you mean 'direction'", "valid keys: metric, direction"]),
    ("wrong type", "budget: 12", "budget: many", ["search.budget", "got 'many'", "expected a valid integer"]),
    ("out of range", "budget: 12", "budget: 0", ["search.budget", "got 0", "greater than or equal to 1"]),
    ("bool is not an int", "budget: 12", "budget: true", ["search.budget", "got True", "valid integer"]),
    ("bad direction", "direction: min}\n    - {metric: bitops", "direction: up}\n    - {metric: bitops",
     ["search.objectives[0].direction", "got 'up'", "expected 'min' or 'max'"]),
    ("missing section", "dataset:\n  name: digits\n", "", ["dataset", "missing required key"]),
    ("empty objectives", "objectives:\n    - {metric: size_kb, direction: min}\n    - {metric: bitops, direction: min}",
     "objectives: []", ["search.objectives", "at least one objective is required"]),
    ("objective twice", "metric: bitops", "metric: size_kb", ["search.objectives", "'size_kb' is listed twice"]),
    ("constraint syntax", '"params >= 1000"', '"params => 1000"',
     ["search.constraints[0]", "cannot parse constraint", "METRIC <= NUMBER"]),
    ("contradictory constraints", '["params >= 1000"]', '["size_kb <= 10", "size_kb >= 20"]',
     ["search.constraints", "'size_kb >= 20' and 'size_kb <= 10' contradict each other"]),
    ("ray key on the local executor", "budget: 12\n", "budget: 12\nexecutor: {kind: local, num_workers: 4}\n",
     ["executor.num_workers", "got 4", "applies only with executor.kind: ray"]),
    ("bad ray address", "budget: 12\n", "budget: 12\nexecutor: {kind: ray, address: 'head:port'}\n",
     ["executor.address", "got 'head:port'", "'HOST:PORT' or 'ray://HOST:PORT'"]),
    ("unknown executor", "budget: 12\n", "budget: 12\nexecutor: {kind: locale}\n",
     ["executor.kind", "did you mean 'local'"]),
    ("latency table missing", "budget: 12\n", "budget: 12\nlatency: {table: t.csv}\n",
     ["latency.table", "file or folder not found", "t.csv"]),
    ("unknown section", "budget: 12\n", "budget: 12\nlatensy: {table: t.csv}\n",
     ["latensy", "unknown key", "did you mean 'latency'"]),
    ("predictors key typo", "budget: 12\n", "budget: 12\npredictors: {modle: ridge}\n",
     ["predictors.modle", "did you mean 'model'"]),
    ("supernet key typo", "budget: 12\n", "budget: 12\nsupernet: {epoch: 3}\n",
     ["supernet.epoch", "unknown key 'epoch'", "did you mean 'epochs'"]),
    ("supernet bad value", "budget: 12\n", "budget: 12\nsupernet: {lr: -0.1}\n",
     ["supernet.lr", "got -0.1", "greater than 0"]),
    ("supernet qat never starts", "budget: 12\n", "budget: 12\nsupernet: {epochs: 3, qat_start: 5}\n",
     ["supernet", "qat_start=5 is after the last epoch"]),
    ("supernet checkpoint missing", "budget: 12\n", "budget: 12\nsupernet: {checkpoint: nope.pt}\n",
     ["supernet.checkpoint", "file or folder not found", "nope.pt"]),
    ("bad run name", "name: tiny", "name: my run", ["name", "names the run folder"]),
    ("section is a list", "dataset:\n  name: digits\n", "dataset: [digits]\n",
     ["dataset", "expected a mapping"]),
    ("negative seed", "seed: 3", "seed: -1", ["seed", "got -1", "greater than or equal to 0"]),
    ("duplicate YAML key", "seed: 3\n", "seed: 3\nseed: 4\n", ["exp.yaml:3", "key 'seed' appears twice"]),
    ("YAML syntax", "  budget: 12", "  budget: [12", ["exp.yaml:", "invalid YAML"]),
]


@pytest.mark.parametrize("what, old, new, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_gives_one_clear_error(tmp_path, what, old, new, expected):
    assert old in GOOD, what
    path = write(tmp_path, GOOD.replace(old, new, 1))
    message = error_of(path)
    assert "\n" not in message
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, (what, message)


def test_missing_data_root_names_the_resolved_path(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path / "cfg", GOOD.replace("  name: digits\n", "  name: digits\n  root: ../no_such_data\n", 1))
    message = error_of(path)
    assert "dataset.root" in message and f"file or folder not found: {tmp_path / 'no_such_data'}" in message


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path / "cfg", GOOD.replace("  name: digits\n", "  name: digits\n  root: ../data\n", 1))
    assert load_experiment(path).config.dataset.root == (tmp_path / "data").resolve()


def test_searcher_file_options_resolve_against_the_config_folder(tmp_path):
    """ilp-bits reads its architecture and sensitivity table from files named in search.options: like every
    input path they are relative to the config, stored absolute (a resume from the run folder finds them)."""
    (tmp_path / "cfg").mkdir()
    text = GOOD.replace("  algorithm: nsga2\n  options: {population_size: 4}\n",
                        "  algorithm: ilp-bits\n  options: {architecture: arch.json, sensitivity: ../t/h.json, "
                        "budgets: ['size_kb <= 30']}\n")
    options = load_experiment(write(tmp_path / "cfg", text)).config.search.options
    assert options["architecture"] == str((tmp_path / "cfg" / "arch.json").resolve())
    assert options["sensitivity"] == str((tmp_path / "t" / "h.json").resolve())
    kept = load_experiment(write(tmp_path, text.replace("arch.json", "largest").replace("../t/h.json", "kl")))
    assert kept.config.search.options["architecture"] == "largest"
    assert kept.config.search.options["sensitivity"] == "kl"


def test_empty_and_missing_files(tmp_path):
    assert "the config is empty" in error_of(write(tmp_path, ""))
    assert f"config file not found: {tmp_path / 'nope.yaml'}" in error_of(tmp_path / "nope.yaml")
    assert "expected a mapping of sections" in error_of(write(tmp_path, "- a\n- b\n"))


def test_defaults_are_filled_and_name_defaults_to_file_stem(tmp_path):
    path = write(tmp_path, GOOD.replace("name: tiny\n", ""), name="my-exp.yaml")
    config = load_experiment(path).config
    assert config.name == "my-exp"
    assert config.executor.kind == "local" and config.output.export_top == 5
    assert config.search_seed == 3
    assert load_experiment(path, ["search.seed=9"]).config.search_seed == 9


def test_overrides_parse_values_as_yaml_and_reach_nested_keys(tmp_path):
    path = write(tmp_path, GOOD)
    loaded = load_experiment(path, ["search.budget=40", "search.objectives.1.direction=max",
                                "search_space.options.depths=[1, 2, 3]", "dataset.options.max_train=100"])
    config = loaded.config
    assert config.search.budget == 40
    assert config.search.objectives[1].direction == "max"
    assert config.search_space.options["depths"] == [1, 2, 3]
    assert config.dataset.options == {"max_train": 100}
    with pytest.raises(ValueError):
        config.search.budget = 3  # frozen


@pytest.mark.parametrize("override, expected", [
    ("search.budgte=5", ["--set search.budgte=5", "unknown key 'budgte'", "did you mean 'budget'"]),
    ("search.budget", ["--set search.budget", "expected KEY=VALUE"]),
    ("search.budget=-3", ["--set search.budget=-3", "greater than or equal to 1"]),
    ("seed.x=1", ["--set seed.x=1", "'seed' holds 3, not a section"]),
])
def test_override_errors_point_at_the_override(tmp_path, override, expected):
    message = error_of(write(tmp_path, GOOD), (override,))
    for fragment in expected:
        assert fragment in message, message


def test_apply_overrides_does_not_mutate_its_input():
    data = {"search": {"budget": 3}}
    out, applied = apply_overrides(data, ["search.budget=4", "output.root=elsewhere"])
    assert data == {"search": {"budget": 3}}
    assert out == {"search": {"budget": 4}, "output": {"root": "elsewhere"}}
    assert set(applied) == {"search.budget", "output.root"}


def test_resolved_yaml_round_trips_and_diff_names_changed_keys(tmp_path):
    config = load_experiment(write(tmp_path, GOOD)).config
    again_path = write(tmp_path, config_to_yaml(config), name="resolved.yaml")
    again = load_experiment(again_path).config
    assert again == config
    changed = load_experiment(again_path, ["search.budget=13"]).config
    assert config_diff(config, changed) == ["search.budget: 12 -> 13"]
    assert config_diff(config, again) == []
    assert yaml.safe_load(config_to_yaml(config))["search"]["seed"] is None


# ---- checks that need the space, the dataset, the evaluators and the searcher ---------------
@pytest.mark.parametrize("override, expected", [
    ("search.objectives.0.metric=size_k", ["search.objectives[0].metric", "did you mean 'size_kb'",
                                           "(available now: macs, params, size_kb, bitops)"]),
    ("search.objectives.0.metric=accuracy", ["'accuracy' is not available", "add a `supernet:` section"]),
    ("search.constraints=['latency_ms <= 3']", ["search.constraints[0]", "add a `latency:` section"]),
    ("search_space.options.in_channels=3", ["search_space.options.in_channels", "is 3 but dataset 'digits' has "
                                            "in_channels=1", "set search_space.options.in_channels: 1"]),
    ("search_space.options.num_classes=7", ["is 7 but dataset 'digits' has num_classes=10"]),
    ("dataset.name=digit", ["dataset.name", "unknown dataset 'digit'", "did you mean 'digits'"]),
    ("dataset.options.max_trian=10", ["dataset.options.max_trian", "did you mean 'max_train'"]),
    ("search_space.options.stem_channel=8", ["search_space.options.stem_channel", "did you mean 'stem_channels'"]),
    ("search_space.name=mbv2", ["search_space.name", "did you mean 'mbv3'"]),
    ("search.algorithm=nsga", ["search.algorithm", "unknown algorithm 'nsga'", "did you mean"]),
    ("search.budget=3", ["search.budget", "proposes 4 candidates per batch", "more than the budget"]),
])
def test_semantic_errors_point_into_the_config(tmp_path, override, expected):
    path = write(tmp_path, GOOD)
    with pytest.raises(InputError) as info:
        prepare(load_experiment(path, [override]))
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


def test_semantic_error_carries_the_file_line(tmp_path):
    path = write(tmp_path, GOOD.replace("metric: bitops", "metric: bitop"))
    line = GOOD.splitlines().index("    - {metric: bitops, direction: min}") + 1
    with pytest.raises(InputError) as info:
        prepare(load_experiment(path))
    assert str(info.value).startswith(f"{path}:{line}: search.objectives[1].metric: metric 'bitop' is not available; "
                                      "did you mean 'bitops'?")


def test_valid_config_summary(tmp_path):
    rows = dict(summary(prepare(load_experiment(write(tmp_path, GOOD)))))
    assert rows["dataset"].startswith("digits (1×8×8, 10 classes")
    assert rows["search space"].startswith("mbv3:") and "distinct subnets" in rows["search space"]
    assert rows["objectives"] == "size_kb (min, analytic), bitops (min, analytic)"
    assert rows["constraints"] == "params >= 1000"
    assert rows["budget"] == "12 distinct candidates"


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_configs_parse(path):
    config = load_experiment(path).config
    assert isinstance(config, ExperimentConfig)
    assert config.name == path.stem


@pytest.mark.parametrize("change, expected", [
    ({"kind": "lpgnas"}, ["lpgnas", "missing required section for kind: lpgnas"]),
    ({"lpgnas": {"lambdas": [0.1]}}, ["lpgnas", "not used by kind: search"]),
    ({"kind": "lpgnas", "lpgnas": {"lambdas": [0.1]}}, ["search", "not used by kind: lpgnas"]),
    ({"kind": "evolve"}, ["kind", "unknown experiment kind 'evolve'", "known: lpgnas, search, space-search"]),
    ({"kind": "serch"}, ["kind", "'serch'", "'search'"]),
    ({"kind": "space-search"}, ["space_search", "missing required section for kind: space-search"]),
    ({"search_space": None}, ["search_space", "missing required section for kind: search"]),
])
def test_experiment_kind_needs_its_sections(tmp_path, change, expected):
    data = yaml.safe_load(GOOD)
    data.update(change)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    message = error_of(path)
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize("section, key, value", [("supernet", "epochs", 10**9), ("supernet", "warmup_epochs", 10**6),
                                                 ("supernet", "random_subnets", 1000)])
def test_training_lengths_have_an_upper_bound(tmp_path, section, key, value):
    data = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    data[section][key] = value
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match=f"{section}.{key}: got {value}; expected less than or equal to"):
        load_experiment(path)
