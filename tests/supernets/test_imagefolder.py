"""The ``imagefolder`` dataset: a class tree of the user's image files, both layouts, workers, bad trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search_spaces.errors import InputError
from supernets.data import ImageSplits, load_dataset
from supernets.data.stream import StreamedImages

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}  # sorted names: labels 0, 1, 2
SHAPES = ((40, 30), (24, 64), (33, 33))  # wider, taller, square: every image is resized and centre-cropped


def _write(folder: Path, per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = SHAPES[i % len(SHAPES)]
            pixels = np.clip(np.array(rgb) + rng.integers(-15, 16, size=(h, w, 3)), 0, 255).astype(np.uint8)
            suffix = (".png", ".jpg", ".JPEG")[i % 3]
            Image.fromarray(pixels).save(folder / name / f"{i:03d}{suffix}")


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    _write(root / "pets", 20)
    return root


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    _write(root / "train", 20)
    _write(root / "val", 6, seed=1)
    return root


def test_a_flat_tree_is_split_three_ways_with_labels_by_sorted_folder(flat):
    data = load_dataset("imagefolder", root=flat, folder="pets", image_size=16, val_fraction=0.2, test_fraction=0.1)
    assert isinstance(data, ImageSplits) and data.classes == ("blue", "green", "red") and data.num_classes == 3
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (42, 12, 6)
    assert data.train_x.shape == (42, 3, 16, 16) and data.image_size == 16 and data.in_channels == 3
    for split_y in (data.train_y, data.val_y, data.test_y):
        assert torch.bincount(split_y, minlength=3).min() >= 2  # stratified
    x, y = data.train_x, data.train_y
    red, blue = x[y == 2].mean(dim=(0, 2, 3)), x[y == 0].mean(dim=(0, 2, 3))
    assert red[0] > 1 and blue[0] < -0.5 and blue[2] > 1 and red[2] < -0.5  # normalised channels follow the colours
    again = load_dataset("imagefolder", root=flat, folder="pets", image_size=16, val_fraction=0.2, test_fraction=0.1)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.val_y, data.val_y)
    other = load_dataset("imagefolder", root=flat, folder="pets", image_size=16, val_fraction=0.2,
                         test_fraction=0.1, seed=1)
    assert not torch.equal(other.val_y, data.val_y) or not torch.equal(other.val_x, data.val_x)


def test_a_train_tree_with_a_held_out_folder_and_workers(split_tree):
    data = load_dataset("imagefolder", root=split_tree, image_size=12, channels=1, max_train=30)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (30, 6, 18)  # val: 0.1 of 60; test = val/
    assert data.train_x.shape == (30, 1, 12, 12) and "test = val/" in data.description
    in_workers = load_dataset("imagefolder", root=split_tree, image_size=12, channels=1, max_train=30, workers=2)
    assert torch.equal(in_workers.train_x, data.train_x) and torch.equal(in_workers.test_x, data.test_x)


def test_the_root_itself_or_an_absolute_folder_can_be_the_tree(flat, monkeypatch):
    data = load_dataset("imagefolder", root=flat / "pets", image_size=8)
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 60
    monkeypatch.delenv("QNAS_DATA", raising=False)  # an absolute folder needs no data root
    alone = load_dataset("imagefolder", folder=str(flat / "pets"), image_size=8)
    assert torch.equal(alone.train_x, data.train_x)


def _error(root, **options) -> InputError:
    with pytest.raises(InputError) as err:
        load_dataset("imagefolder", root=root, **options)
    return err.value


def test_an_unreadable_image_is_an_error_naming_the_file(tmp_path):
    _write(tmp_path / "t", 4)
    bad = tmp_path / "t" / "green" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    err = _error(tmp_path, folder="t", val_fraction=0.25, test_fraction=0.25)
    assert err.source == str(bad) and "cannot read image" in str(err)
    err = _error(tmp_path, folder="t", val_fraction=0.25, test_fraction=0.25, workers=1)  # raised here, not inside
    assert err.source == str(bad)


@pytest.mark.parametrize("damage, field_or_source, words", [
    (lambda root: None, "missing", "folder not found"),
    (lambda root: (root / "t" / "blue").mkdir(parents=True), "t", "at least 2 class folders"),
    (lambda root: [(root / "t" / c).mkdir(parents=True) for c in ("a", "b")], "a", "holds no images"),
])
def test_bad_trees_are_one_error_naming_the_folder(tmp_path, damage, field_or_source, words):
    damage(tmp_path)
    err = _error(tmp_path, folder="missing" if field_or_source == "missing" else "t")
    assert Path(str(err.source)).name == field_or_source and words in str(err)


def test_split_trees_must_agree_and_hold_a_held_out_folder(tmp_path):
    _write(tmp_path / "t" / "train", 3)
    err = _error(tmp_path, folder="t")
    assert "no held-out test/ or val/ folder" in str(err)
    (tmp_path / "t" / "test" / "blue").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "test" / "blue" / "x.png")
    (tmp_path / "t" / "test" / "purple").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "t" / "test" / "purple" / "x.png")
    err = _error(tmp_path, folder="t")
    assert Path(str(err.source)).name == "test" and "missing ['green', 'red'], extra ['purple']" in str(err)


@pytest.mark.parametrize("options, field", [
    ({"channels": 2}, "channels"), ({"workers": -1}, "workers"), ({"image_size": 2}, "image_size"),
    ({"image_size": True}, "image_size"), ({"folder": ""}, "folder"), ({"val_fraction": 1.5}, "val_fraction"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"), ({"max_train": 0}, "max_train"),
    ({"stream": "yes"}, "stream"), ({"stats_images": 0}, "stats_images"),
])
def test_bad_options_name_the_option(flat, options, field):
    assert _error(flat, **({"folder": "pets"} | options)).field == field


@pytest.mark.parametrize("stream", [False, True])
def test_a_run_trains_and_searches_on_an_image_folder(flat, tmp_path, stream):
    import yaml

    from nas.runner import start_run

    torch.set_num_threads(1)
    space = {"in_channels": 3, "image_size": 8, "num_classes": 3, "stem_channels": 8, "stage_channels": [8, 16],
             "stage_strides": [1, 2], "stage_se": [False, False], "stage_act": ["relu", "relu"], "depths": [1],
             "kernels": [3], "expands": [2], "head_channels": 16, "w_bits": [4, 8], "a_bits": [8]}
    config = {"name": "folder", "seed": 0,
              "dataset": {"name": "imagefolder", "root": str(flat),
                          "options": {"folder": "pets", "image_size": 8, "stream": stream}},
              "search_space": {"name": "mbv3", "options": space},
              "supernet": {"warmup_epochs": 1, "epochs": 1, "batch_size": 16, "bn_calib_samples": 16},
              "search": {"algorithm": "random", "options": {"batch_size": 2}, "budget": 2,
                         "objectives": [{"metric": "accuracy", "direction": "max"},
                                        {"metric": "size_kb", "direction": "min"}]},
              "output": {"export_top": 1, "root": str(tmp_path / "runs")}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    outcome = start_run(path)
    assert (outcome.run_dir / "supernet.pt").is_file() and (outcome.run_dir / "pareto.csv").is_file()
    assert "imagefolder" in (outcome.run_dir / "report.md").read_text()


def test_streamed_train_images_equal_the_decoded_ones(flat):
    options = dict(root=flat, folder="pets", image_size=8, val_fraction=0.2, test_fraction=0.1)
    memory = load_dataset("imagefolder", **options)
    streamed = load_dataset("imagefolder", stream=True, **options)
    assert isinstance(streamed.train_x, StreamedImages) and len(streamed.train_x) == len(memory.train_x) == 42
    assert streamed.train_x.shape == memory.train_x.shape and "streamed" in streamed.description
    assert torch.equal(streamed.train_x[:42], memory.train_x)  # statistics of all 42 (stats_images 2048)
    index = torch.tensor([5, 0, 41, 7])
    assert torch.equal(streamed.train_x[index], memory.train_x[index])
    assert torch.equal(streamed.val_x, memory.val_x) and torch.equal(streamed.test_y, memory.test_y)
    batches = list(streamed.train_x.batches(index, 3, 2))
    assert len(batches) == 2 and torch.equal(batches[0], memory.train_x[index[:3]])
    assert torch.equal(batches[1], memory.train_x[index[3:]])
    few = load_dataset("imagefolder", stream=True, stats_images=6, **options)
    assert not torch.equal(few.train_x[:6], memory.train_x[:6])  # other statistics: the first 6 images'
    assert "first 6 train images" in few.description


def _trained(data, *, epochs: int = 1):
    from search_spaces.testing import tiny_mbv3
    from supernets.config import SupernetConfig
    from supernets.supernet import QuantSupernet
    from supernets.training import SupernetTrainer

    torch.manual_seed(0)
    net = QuantSupernet(tiny_mbv3(in_channels=3, num_classes=3, image_size=8), image_size=8)
    cfg = SupernetConfig(warmup_epochs=1, epochs=epochs, batch_size=8, random_subnets=1, bn_calib_samples=8)
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, cfg)
    while not trainer.done:
        trainer.train_epoch()
    return trainer


@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_streamed_images_equals_training_in_memory(flat, workers):
    torch.set_num_threads(1)
    options = dict(root=flat, folder="pets", image_size=8, val_fraction=0.2, test_fraction=0.1)
    memory = _trained(load_dataset("imagefolder", **options))
    streamed = _trained(load_dataset("imagefolder", stream=True, workers=workers, **options))
    for key, value in memory.net.state_dict().items():
        assert torch.equal(streamed.net.state_dict()[key], value), key
    assert [log.loss for log in streamed.history] == [log.loss for log in memory.history]


def test_a_train_image_broken_after_loading_stops_training_naming_it(tmp_path):
    _write(tmp_path / "t", 8)
    data = load_dataset("imagefolder", root=tmp_path, folder="t", image_size=8, stream=True, val_fraction=0.25,
                        test_fraction=0.25)
    victim = data.train_x.source.files[3]
    Path(victim).write_bytes(b"truncated")
    with pytest.raises(InputError) as err:
        _trained(data)
    assert err.value.source == victim and "cannot read image" in str(err.value)


def test_streamed_splits_travel_to_other_processes(flat):
    """Training processes and Ray workers get the splits pickled: a stream arrives as the same files."""
    import pickle

    data = load_dataset("imagefolder", root=flat, folder="pets", image_size=8, stream=True, workers=1)
    copy = pickle.loads(pickle.dumps(data.to("cpu")))
    assert isinstance(copy.train_x, StreamedImages) and torch.equal(copy.train_x[:10], data.train_x[:10])


@pytest.mark.parametrize("size", [2, 3])
def test_each_training_process_decodes_only_its_shard_of_every_batch(flat, monkeypatch, size):
    """Ranks simulated in this process (collectives stubbed): a streamed rank decodes only its shard of each global
    batch, the same files in the same order as the in-memory path's shard, and trains on the same images
    (augmented with the whole batch's random numbers) as one process that reads and augments the whole batch."""
    from search_spaces.testing import tiny_mbv3
    from supernets.config import SupernetConfig
    from supernets.data import stream
    from supernets.distributed import SINGLE, World
    from supernets.supernet import QuantSupernet
    from supernets.training import SupernetTrainer

    torch.set_num_threads(1)
    options = dict(root=flat, folder="pets", image_size=8, val_fraction=0.2, test_fraction=0.1)
    memory, streamed = load_dataset("imagefolder", **options), load_dataset("imagefolder", stream=True, **options)
    cfg = SupernetConfig(warmup_epochs=1, epochs=1, batch_size=8, random_subnets=1, bn_calib_samples=8)
    decoded: list[str] = []
    decode = stream._Decode.__getitem__

    def counted(self, i):  # workers 0: every image is decoded in this process
        decoded.append(self.files[i])
        return decode(self, i)
    monkeypatch.setattr(stream._Decode, "__getitem__", counted)
    monkeypatch.setattr(World, "all_reduce_sum", lambda self, t: t)

    def epoch(data, world):
        """The (images, labels) each step trains on and the files decoded, in the first epoch of ``world``'s rank."""
        net = QuantSupernet(tiny_mbv3(in_channels=3, num_classes=3, image_size=8), image_size=8)
        trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, cfg, world=world)
        steps = []
        trainer._step = lambda x, y, phase, batch: steps.append((x, y, batch)) or [torch.zeros(())]
        trainer.extreme_accuracies = lambda quantize: (0.0, 0.0)
        decoded.clear()
        trainer.train_epoch()
        assert trainer.steps_per_epoch == 5
        return steps, list(decoded)

    whole, _ = epoch(memory, SINGLE)  # the global batches, read and augmented whole
    _, files = epoch(streamed, SINGLE)
    assert len(files) == 5 * 8
    for rank in range(size):
        world = World(rank, size)
        mine = world.shard(8)
        in_memory, none = epoch(memory, world)
        shards, decoded_here = epoch(streamed, world)
        assert none == [] and len(decoded_here) == 5 * (mine.stop - mine.start)  # its shard, not the global batch
        assert decoded_here == [f for s in range(5) for f in files[s * 8:(s + 1) * 8][mine]]
        for (x, y, batch), (mx, my, _), (wx, wy, _) in zip(shards, in_memory, whole, strict=True):
            assert batch == 8 and torch.equal(x, mx) and torch.equal(y, my)
            assert torch.equal(x, wx[mine]) and torch.equal(y, wy[mine])
