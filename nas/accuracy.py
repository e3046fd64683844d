"""Measured accuracy from the quantized supernet: train (or load) it, evaluate subnets, validate the front.

``accuracy`` during the search is the subnet's validation accuracy inside the supernet (weights
inherited, BN recalibrated, fake-quantized at the genome's bit-widths). The final validation
extracts every Pareto subnet as a standalone module and measures it again (``accuracy_extracted``,
same split, must agree) and on the held-out test split (``accuracy_test``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from search_spaces import Genome, InputError, SearchSpace
from supernets.checkpoint import load_supernet
from supernets.concurrent import ConcurrentSubnets
from supernets.data import ImageSplits
from supernets.device import CPU, Placement
from supernets.evaluate import SubnetEvaluator, accuracy_and_loss
from supernets.fit import fit_supernet
from supernets.launch import LaunchPlan

from .config_sections import SupernetSection

__all__ = ["SUPERNET_CHECKPOINT", "SupernetAccuracyEvaluator", "supernet_evaluator", "validate_front"]

SUPERNET_CHECKPOINT = "supernet.pt"


class SupernetAccuracyEvaluator:
    """``accuracy`` and ``val_loss`` (measured): validation accuracy and mean cross-entropy (nats per image, or
    per token for a language model) of each subnet inside the trained supernet, from one pass."""

    bounds = {"accuracy": (0.0, 1.0)}
    metrics_declared = {"accuracy": "measured", "val_loss": "measured"}

    def __init__(self, evaluator: SubnetEvaluator, *, at_once: int = 1) -> None:
        """``at_once`` > 1: that many subnets measured concurrently (:class:`~supernets.concurrent.ConcurrentSubnets`:
        a supernet copy and, on CUDA, a stream each), made on the first batch that has several."""
        self.subnets, self.at_once = evaluator, at_once
        self._concurrent: ConcurrentSubnets | None = None

    @property
    def metrics(self) -> Mapping[str, str]:
        return dict(self.metrics_declared)

    def evaluate(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in genomes]
        for position, metrics in self.evaluate_iter(genomes):
            out[position] = metrics
        return out

    def evaluate_iter(self, genomes: Sequence[Genome]) -> Iterator[tuple[int, dict[str, float]]]:
        """Each result as soon as it is measured (the loop journals it then): one subnet after another, or
        ``at_once`` at a time, in the order they finish."""
        if self.at_once > 1 and len(genomes) > 1:
            if self._concurrent is None:
                self._concurrent = ConcurrentSubnets(self.subnets, self.at_once)
            yield from self._concurrent.measure_iter(genomes)
            return
        for position, genome in enumerate(genomes):
            yield position, self.subnets.measure(genome)


def supernet_evaluator(section: SupernetSection, space: SearchSpace, data: ImageSplits, run_dir: Path, *,
                       progress: bool = True, log: Callable[[str], None] | None = None,
                       placement: Placement | None = None, launch: LaunchPlan | None = None) -> SubnetEvaluator:
    """Train the supernet into ``run_dir/supernet.pt`` (resuming it), or load ``section.checkpoint``; on
    ``placement``'s device and precision (default: fp32 on the CPU), the data moved there once; in
    ``launch.processes`` processes when more than one (the evaluator then lives in this one)."""
    placement = placement or CPU
    data = data.to(placement.device, channels_last=placement.channels_last)
    if section.checkpoint is not None:
        net, _ = load_supernet(section.checkpoint, space=space)  # on the CPU, wherever it was written
        net.check_splits(data, source=f"dataset {data.name!r}")
        placement.put_module(net)
        if log:
            log(f"using the trained supernet {section.checkpoint}")
    else:
        net = fit_supernet(space, data, section.train_config(), checkpoint=Path(run_dir) / SUPERNET_CHECKPOINT,
                           progress=progress, log=log, placement=placement, launch=launch).net
    if hasattr(data, "image_size") and data.image_size != net.image_size:
        raise InputError(f"the supernet was trained on {net.image_size}x{net.image_size} images, the dataset has "
                         f"{data.image_size}x{data.image_size}", source=str(section.checkpoint), field="image_size")
    return SubnetEvaluator(net.eval(), data.train_x[: section.bn_calib_samples], data.val_x, data.val_y,
                           batch_size=section.eval_batch_size, placement=placement)


def validate_front(evaluator: SubnetEvaluator, genomes: Sequence[Genome], data: ImageSplits
                   ) -> dict[str, dict[str, float]]:
    """Extract each subnet and measure it for real (on the supernet's device, in its evaluation precision):
    ``{key: {accuracy_extracted, accuracy_test, val_loss_extracted, test_loss}}``."""
    placement = evaluator.placement
    data = data.to(placement.device, channels_last=placement.channels_last)
    out = {}
    for genome in genomes:
        model = evaluator.extract(genome)
        with placement.autocast():
            val = accuracy_and_loss(model, data.val_x, data.val_y, evaluator.batch_size)
            test = accuracy_and_loss(model, data.test_x, data.test_y, evaluator.batch_size)
        out[genome.key] = {"accuracy_extracted": val[0], "accuracy_test": test[0],
                           "val_loss_extracted": val[1], "test_loss": test[1]}
    return out
