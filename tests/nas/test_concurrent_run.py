"""``supernet.subnets_at_once``: a search that measures several subnets at once journals what one at a time does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from nas.cli import main
from search_spaces import get_space
from search_spaces.testing import TINY_MBV3
from supernets.data import load_dataset

TRAIN = {"warmup_epochs": 1, "epochs": 1, "batch_size": 64, "bn_calib_samples": 128, "random_subnets": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny trained supernet: one float epoch and one sandwich epoch on 256 digits."""
    from nas.config_sections import SupernetSection
    from supernets.fit import fit_supernet

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    data = load_dataset("digits", seed=0, max_train=256)
    fit_supernet(get_space("mbv3", **TINY_MBV3), data, SupernetSection(**TRAIN).train_config(), checkpoint=path,
                 progress=False, log=None)
    return path


def run(folder: Path, checkpoint: Path, at_once: int) -> dict[str, dict[str, float]]:
    config = {"name": f"at-once-{at_once}", "seed": 0, "dataset": {"name": "digits", "options": {"max_train": 256}},
              "search_space": {"name": "mbv3", "options": TINY_MBV3},
              "supernet": {"checkpoint": str(checkpoint), "bn_calib_samples": 128, "subnets_at_once": at_once},
              "search": {"algorithm": "random", "options": {"batch_size": 5}, "budget": 10,
                         "objectives": [{"metric": "accuracy", "direction": "max"},
                                        {"metric": "size_kb", "direction": "min"}]},
              "output": {"root": str(folder / "runs"), "export_top": 0}}
    path = folder / f"at_once_{at_once}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 0
    (run_dir,) = (folder / "runs").glob(f"at-once-{at_once}-*")
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    return {r["key"]: r["metrics"] for r in map(json.loads, lines)}


def test_several_subnets_at_once_journal_the_same_measurements(tmp_path, checkpoint, capsys):
    one, three = run(tmp_path, checkpoint, 1), run(tmp_path, checkpoint, 3)
    assert len(one) == 10 and one.keys() == three.keys()
    for key, metrics in one.items():
        assert three[key]["accuracy"] == metrics["accuracy"]
        assert three[key]["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_subnets_at_once_must_be_a_positive_integer(tmp_path, checkpoint, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"name": "digits"}, "search_space": {"name": "mbv3"},
                                    "supernet": {"checkpoint": str(checkpoint), "subnets_at_once": 0},
                                    "search": {"algorithm": "random", "budget": 4,
                                               "objectives": [{"metric": "size_kb"}]}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "supernet.subnets_at_once" in err and "greater than or equal to 1" in err
