"""Train a supernet end to end with per-epoch checkpoints, resume and a progress bar."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from search_spaces import SearchSpace

from .checkpoint import restore_trainer, save_checkpoint
from .data import ImageSplits
from .device import Placement
from .supernet import QuantSupernet
from .training import EpochLog, SupernetConfig, SupernetTrainer

__all__ = ["fit_supernet"]


def fit_supernet(space: SearchSpace, data: ImageSplits, config: SupernetConfig, *, checkpoint: str | Path,
                 progress: bool = True, log: Callable[[str], None] | None = print,
                 placement: Placement | None = None) -> SupernetTrainer:
    """Train (or finish training) the supernet of ``space`` on ``data``.

    The checkpoint at ``checkpoint`` is written after every epoch; if it already exists training
    resumes from it (refusing a different space or config), so a killed run loses at most one epoch.
    ``placement`` (default: fp32 on the CPU) says where and in which precision to train; checkpoints
    hold CPU tensors, so one written on a GPU resumes on a CPU and the other way round.
    """
    net = QuantSupernet(space, image_size=data.image_size, seed=config.seed)
    net.check_data(data.in_channels, data.num_classes, data.image_size, source=f"dataset {data.name!r}")
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, config, placement=placement)
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        restore_trainer(trainer, checkpoint)
        if log and trainer.done:
            log(f"supernet already trained ({trainer.epoch}/{trainer.total_epochs} epochs): loaded {checkpoint}")
        elif log and trainer.epoch:
            log(f"resuming supernet training at epoch {trainer.epoch + 1}/{trainer.total_epochs} from {checkpoint}")
    with _progress_bar(progress) as bar:
        while not trainer.done:
            description = f"supernet epoch {trainer.epoch + 1}/{trainer.total_epochs} ({trainer.phase(trainer.epoch)})"
            task = None if bar is None else bar.add_task(description, total=trainer.steps_per_epoch)
            # Without a bar no per-step callback: on a GPU it would wait for every step's loss.
            on_step = None if bar is None else (lambda step, loss: bar.update(task, completed=step + 1))
            entry = trainer.train_epoch(on_step=on_step)
            if bar is not None:
                bar.remove_task(task)
            save_checkpoint(trainer, checkpoint)
            if log:
                log(_describe(entry, trainer.total_epochs))
    return trainer


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[object | None]:
    """A transient rich progress bar, or None (rich is imported only when a bar is shown)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        yield bar


def _describe(e: EpochLog, total: int) -> str:
    return (f"supernet epoch {e.epoch + 1}/{total} [{e.phase}] loss {e.loss:.3f}  "
            f"val acc largest {e.max_acc:.3f} smallest {e.min_acc:.3f}  ({e.seconds:.1f}s)")
