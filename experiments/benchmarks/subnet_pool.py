"""A resumable pool of true subnet measurements from a trained supernet (shared by benchmarks).

Each entry is one genome with its measured validation accuracy, fake-quantized at the genome's
bit-widths (``acc_q``) and in float with the same architecture (``acc_fp``, the cheap
architecture-only signal APQ-style transfer starts from). The pool is appended to a JSON-lines file
as it is measured, so an interrupted benchmark continues where it stopped, and several benchmarks
(predictors, search) replay the same measurements instead of paying for them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from search_spaces import Genome, SearchSpace
from supernets.checkpoint import load_supernet
from supernets.data import load_dataset
from supernets.evaluate import SubnetEvaluator

__all__ = ["MeasuredPool", "SAME_DATA"]

SAME_DATA: dict[str, dict[str, str]] = {"cifar10": {"variant": "subset"}}
"""Loader options that keep a benchmark on the data its published figures (README, results/) came from: the
CIFAR-10 figures were measured on the 10k-image subset, before the full set became the loader's default."""


class MeasuredPool:
    """Measured accuracies by genome key, persisted line by line in ``path``."""

    def __init__(self, checkpoint: str | Path, dataset: str, path: str | Path, *, calib: int = 256,
                 eval_samples: int = 500, seed: int = 0, split: str = "val") -> None:
        """``split``: measure on the first ``eval_samples`` validation images, or test images (``"test"``)."""
        self.net, state = load_supernet(checkpoint)
        self.space: SearchSpace = self.net.space
        data = load_dataset(dataset, seed=seed, **SAME_DATA.get(dataset, {}))
        self.data, self.calib, self.eval_samples = data, calib, eval_samples
        x, y = getattr(data, f"{split}_x")[:eval_samples], getattr(data, f"{split}_y")[:eval_samples]
        self.quant = SubnetEvaluator(self.net.eval(), data.train_x[:calib], x, y)
        self.float = SubnetEvaluator(self.net, data.train_x[:calib], x, y, quantize=False)
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row
        self.seconds: list[float] = []

    def genome(self, key: str) -> Genome:
        return self.space.from_dict(self.rows[key]["genome"])

    def measure(self, genome: Genome, *, quant: bool = True, fp: bool = False) -> dict:
        """The measured row of ``genome`` with the asked fields (``acc_q``, ``acc_fp``): read from the file,
        or measured now (only what is missing) and appended."""
        row = dict(self.rows.get(genome.key) or {"key": genome.key, "genome": genome.to_dict()})
        missing = [(k, ev) for k, ev, wanted in (("acc_q", self.quant, quant), ("acc_fp", self.float, fp))
                   if wanted and k not in row]
        if not missing:
            return row
        start = time.perf_counter()
        for key, evaluator in missing:
            row[key] = evaluator.accuracy(genome)
        self.seconds.append((time.perf_counter() - start) / len(missing))
        self.rows[genome.key] = row
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        return row

    def draw(self, n: int, seed: int, *, exclude: Iterable[str] = ()) -> list[Genome]:
        """``n`` distinct random genomes (seeded, none of ``exclude``), not measured; a longer draw with the
        same seed starts with the shorter one."""
        rng = np.random.default_rng(seed)
        skip, genomes = set(exclude), {}
        while len(genomes) < n:
            g = self.space.sample(rng)
            if g.key not in skip:
                genomes.setdefault(g.key, g)
        return list(genomes.values())

    def sample(self, n: int, seed: int, *, quant: bool = True, fp: bool = False, log_every: int = 50,
               exclude: Iterable[str] = ()) -> list[dict]:
        """``n`` distinct random genomes (seeded, none of ``exclude``), measured."""
        out = []
        for i, genome in enumerate(self.draw(n, seed, exclude=exclude)):
            out.append(self.measure(genome, quant=quant, fp=fp))
            if log_every and (i + 1) % log_every == 0:
                print(f"  measured {i + 1}/{n}", flush=True)
        return out

    def accuracies(self, genomes: Iterable[Genome]) -> list[float]:
        return [self.measure(g)["acc_q"] for g in genomes]


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="measure a pool of random subnets")
    parser.add_argument("checkpoint")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--out", required=True)
    parser.add_argument("-n", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    MeasuredPool(args.checkpoint, args.dataset, args.out).sample(args.n, seed=0, fp=True)
