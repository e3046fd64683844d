"""``imagefolder`` on this CPU: loading time and supernet training throughput, in memory vs streamed from files.

The CIFAR-10 subset's JPEGs (``cifar10_jpeg_subset.npz``: 10k train, 10k test) are written as a class tree
(``train/<class>/<i>.jpg``, ``test/<class>/<i>.jpg``, the original bytes: nothing re-encoded) into a temporary
folder. Then, per setting, on ``--max-train`` (4,096) of the training images: ``load_dataset("imagefolder")``
(the decode into memory, or for a stream only val/test and the normalisation sample), and a supernet (a small
MobileNetV3-like space at 32x32, light enough that decoding matters) trained for one float warm-up epoch (the
largest subnet alone: the step where data loading weighs most) and one sandwich epoch (largest, smallest and one
random subnet, fake-quantized). Throughput is training images per second of each epoch's optimizer steps (the
trainer's ``train_seconds``), one torch thread. Settings run interleaved over ``--repeats`` rounds; the median is
reported. Workers share this machine's 2 cores with the training process.

Usage:  QNAS_DATA=../shared/data python experiments/benchmarks/imagefolder_stream.py [--repeats 2]
Results: a printed table and experiments/benchmarks/results/imagefolder_stream.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from search_spaces import get_space
from supernets.config import SupernetConfig
from supernets.data import load_dataset
from supernets.data.images import CIFAR10_CLASSES
from supernets.supernet import QuantSupernet
from supernets.training import SupernetTrainer

RESULTS = Path(__file__).parent / "results"
SPACE = dict(in_channels=3, num_classes=10, image_size=32, stem_channels=8, stage_channels=[16, 24, 32],
             stage_strides=[2, 2, 2], stage_se=[False, True, True], stage_act=["relu", "hswish", "hswish"],
             depths=[1, 2], kernels=[3], expands=[2, 4], head_channels=64, w_bits=[4, 8], a_bits=[4, 8])
SETTINGS = {"in memory": dict(stream=False, workers=0), "stream, 0 workers": dict(stream=True, workers=0),
            "stream, 1 worker": dict(stream=True, workers=1), "stream, 2 workers": dict(stream=True, workers=2)}


def write_tree(npz: Path, out: Path) -> int:
    """The npz's JPEG bytes as train/ and test/ class trees; the number of files written."""
    n = 0
    with np.load(npz) as z:
        for split in ("train", "test"):
            buf, off, labels = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"]
            for name in CIFAR10_CLASSES:
                (out / split / name).mkdir(parents=True, exist_ok=True)
            for i, label in enumerate(labels):
                (out / split / CIFAR10_CLASSES[label] / f"{i:05d}.jpg").write_bytes(buf[off[i]:off[i + 1]].tobytes())
                n += 1
    return n


def run(tree: Path, setting: dict, seed: int, max_train: int | None) -> dict:
    start = time.perf_counter()
    data = load_dataset("imagefolder", root=tree, image_size=32, max_train=max_train, max_val=1000, max_test=1000,
                        **setting)
    load_s = time.perf_counter() - start
    torch.manual_seed(seed)
    net = QuantSupernet(get_space("mbv3", **SPACE), image_size=32)
    cfg = SupernetConfig(warmup_epochs=1, epochs=1, batch_size=128, random_subnets=1, bn_calib_samples=256,
                         seed=seed)
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, cfg)
    images = trainer.steps_per_epoch * cfg.batch_size
    logs = [trainer.train_epoch() for _ in range(trainer.total_epochs)]
    return {"load_s": load_s, "train_images": len(data.train_y), "warmup_images_per_s": images / logs[0].train_seconds,
            "sandwich_images_per_s": images / logs[1].train_seconds, "max_acc": logs[1].max_acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-train", type=int, default=4096, help="training images of each run (of 10,000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    npz = Path(os.environ.get("QNAS_DATA", "../shared/data")) / "cifar10_jpeg_subset" / "cifar10_jpeg_subset.npz"
    rows: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder)
        start = time.perf_counter()
        files = write_tree(npz, tree)
        print(f"wrote {files} JPEG files in {time.perf_counter() - start:.1f} s", flush=True)
        for r in range(args.repeats):
            for name, setting in SETTINGS.items():
                rows[name].append(run(tree, setting, seed=r, max_train=args.max_train))
                last = rows[name][-1]
                print(f"  round {r} {name:18s} load {last['load_s']:6.1f} s  "
                      f"warm-up {last['warmup_images_per_s']:7.0f} "
                      f"img/s  sandwich {last['sandwich_images_per_s']:6.0f} img/s", flush=True)
    summary = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}
    print(f"\n{'setting':18s} {'load s':>7s} {'warm-up img/s':>14s} {'sandwich img/s':>15s}")
    for name, s in summary.items():
        print(f"{name:18s} {s['load_s']:7.1f} {s['warmup_images_per_s']:14.0f} {s['sandwich_images_per_s']:15.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "imagefolder_stream.json"
    out.write_text(json.dumps({"files": files, "space": SPACE, "repeats": args.repeats, "threads": 1,
                               "cpus": os.cpu_count(), "median": summary, "rounds": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
