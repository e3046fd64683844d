"""Transformer configs: a text dataset against an ``lm`` space, each mismatch one error naming the config key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nas.kinds import load_experiment
from nas.runner import prepare, summary
from search_spaces.errors import InputError

CONFIG = """\
name: lm
dataset:
  name: tinyshakespeare
  root: {root}
  options: {{seq_len: 8}}
search_space:
  name: transformer
  options: {{front: lm, vocab_size: 12, seq_len: 8, depths: [1, 2], widths: [16], heads: [2], mlp_ratios: [1, 2]}}
search:
  algorithm: random
  objectives:
    - {{metric: val_loss, direction: min}}
    - {{metric: size_kb, direction: min}}
  budget: 16
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("abcdefghij \n" * 100, encoding="utf-8")
    path = tmp_path / "lm.yaml"
    path.write_text(CONFIG.format(root=tmp_path), encoding="utf-8")
    return path


def test_a_text_dataset_fits_an_lm_space(config_path):
    rows = dict(summary(prepare(load_experiment(config_path, ["supernet={epochs: 1}"]))))
    assert rows["dataset"].startswith("tinyshakespeare (text, 8-token windows, 12 classes")
    assert rows["objectives"] == "val_loss (min, measured), size_kb (min, analytic)"


@pytest.mark.parametrize("overrides, expected", [
    (["supernet={epochs: 1}", "search_space.options.vocab_size=65"],
     ["search_space.options.vocab_size", "is 65 but dataset 'tinyshakespeare' has vocab_size=12"]),
    (["supernet={epochs: 1}", "dataset.options.seq_len=16"],
     ["search_space.options.seq_len", "has 16-token windows", "set dataset.options.seq_len"]),
    (["supernet={epochs: 1}", "dataset={name: digits}"],
     ["dataset.name", "dataset 'digits' holds images but search space 'transformer' reads text"]),
    ([], ["search.objectives[0].metric", "'val_loss' is not available", "add a `supernet:` section"]),
    (["search_space.options.heads=[3]"], ["search_space.options.heads", "does not divide the largest width 16"]),
])
def test_mismatches_are_one_line_naming_the_key(config_path, overrides, expected):
    with pytest.raises(InputError) as info:
        prepare(load_experiment(config_path, overrides))
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


def test_a_vit_space_refuses_text(config_path):
    text = config_path.read_text().replace("front: lm, vocab_size: 12, seq_len: 8", "front: vit, image_size: 8, "
                                           "in_channels: 1, patch_size: 4")
    config_path.write_text(textwrap.dedent(text))
    with pytest.raises(InputError, match="holds text but search space 'transformer' reads images"):
        prepare(load_experiment(config_path, ["supernet={epochs: 1}"]))


def test_a_predictor_guided_search_learns_val_loss(config_path):
    """A run with a supernet measures val_loss, the predictor-guided searcher fits a predictor on it (with the
    LM's Hessian sensitivity as a feature), and the front is measured again after extraction."""
    import json

    from nas.runner import start_run

    overrides = ["supernet={warmup_epochs: 1, epochs: 1, batch_size: 16, optimizer: adamw, lr: 0.003, "
                 "bn_calib_samples: 16}",
                 "search.algorithm=predictor-nsga2", "predictors={quant_sensitivity: hessian}",
                 "search.options={n_startup_trials: 10, batch_size: 4, population_size: 8, generations: 2}",
                 "search.budget=14", f"output.root={config_path.parent / 'runs'}", "output.export_top=1"]
    outcome = start_run(config_path, overrides=overrides)
    trials = [json.loads(line) for line in (outcome.run_dir / "trials.jsonl").open()]
    assert len(trials) == 14 and all(t["sources"]["val_loss"] == "measured" for t in trials)
    report = json.loads((outcome.run_dir / "predictor_report.json").read_text())
    assert "val_loss" in json.dumps(report)
    guided = [r for r in report["rounds"] if r.get("predictors")]  # HAWQ-V3's table of the LM is their feature
    assert guided and all(r["predictors"]["val_loss"]["quant_sensitivity"] == "hawq" for r in guided)
    assert (outcome.run_dir / "hessian_sensitivity.json").exists()
    front = json.loads((outcome.run_dir / "pareto.json").read_text())["front"]
    for row in front:
        assert row["metrics"]["val_loss_extracted"] == pytest.approx(row["metrics"]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("overrides, field, instead", [
    (["search.algorithm=predictor-nsga2", "predictors={quant_sensitivity: hessian}"], "predictors.quant_sensitivity",
     "use true"),
    (["search.algorithm=ilp-bits", "search.options={budgets: ['size_kb <= 100']}", "search.budget=1"],
     "search.options.sensitivity", "use kl"),
])
def test_the_hessian_table_needs_a_supernet_that_maps_genes_to_quantizers(config_path, monkeypatch, overrides, field,
                                                                           instead):
    """The transformer supernet maps them (its Hessian table is measured like the CNN's); a registered family that
    does not is one error naming the key, before anything trains."""
    overrides = ["supernet={epochs: 1}", *overrides]
    prepare(load_experiment(config_path, overrides))

    class Opaque:
        pass

    monkeypatch.setattr("supernets.families.supernet_class", lambda space: Opaque)
    with pytest.raises(InputError) as info:
        prepare(load_experiment(config_path, overrides))
    assert field in str(info.value) and "trains a Opaque" in str(info.value) and instead in str(info.value)
