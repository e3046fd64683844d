"""Train a supernet end to end with per-epoch checkpoints, resume and a progress bar (in this process or several)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from search_spaces import SearchSpace

from .checkpoint import restore_trainer, save_checkpoint
from .data import ImageSplits
from .device import Placement
from .launch import LaunchPlan, join_torchrun, leave_group, train_processes, train_rank
from .families import build_supernet
from .training import EpochLog, SupernetConfig, SupernetTrainer

__all__ = ["fit_supernet"]


def fit_supernet(space: SearchSpace, data: ImageSplits, config: SupernetConfig, *, checkpoint: str | Path,
                 progress: bool = True, log: Callable[[str], None] | None = print,
                 placement: Placement | None = None, launch: LaunchPlan | None = None) -> SupernetTrainer:
    """Train (or finish training) the supernet of ``space`` on ``data``.

    The checkpoint at ``checkpoint`` is written after every epoch; if it already exists training
    resumes from it (refusing a different space or config), so a killed run loses at most one epoch.
    ``placement`` (default: fp32 on the CPU) says where and in which precision to train; checkpoints
    hold CPU tensors, so one written on a GPU resumes on a CPU and the other way round.
    ``launch`` with more than one process trains in that many processes, local ones or Ray Train workers
    (``launch.launcher``; this one waits for them, then loads what their rank 0 wrote); a checkpoint resumes on
    any number of processes.
    """
    net = build_supernet(space, image_size=getattr(data, "image_size", None), seed=config.seed)
    net.check_splits(data, source=f"dataset {data.name!r}")
    trainer = SupernetTrainer(net, data.train_x, data.train_y, data.val_x, data.val_y, config, placement=placement)
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        restore_trainer(trainer, checkpoint)
        if log and trainer.done:
            log(f"supernet already trained ({trainer.epoch}/{trainer.total_epochs} epochs): loaded {checkpoint}")
        elif log and trainer.epoch:
            log(f"resuming supernet training at epoch {trainer.epoch + 1}/{trainer.total_epochs} from {checkpoint}")
    if launch is not None and launch.torchrun:
        _train_with_torchrun(space, data, config, checkpoint, trainer, launch, log=log)
        return trainer
    if launch is not None and launch.processes > 1 and not trainer.done:
        _train_elsewhere(space, data, config, checkpoint, trainer, launch, progress=progress, log=log)
        return trainer
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


def _train_elsewhere(space: SearchSpace, data: ImageSplits, config: SupernetConfig, checkpoint: Path,
                     trainer: SupernetTrainer, launch: LaunchPlan, *, progress: bool,
                     log: Callable[[str], None] | None) -> None:
    """Train in ``launch.processes`` processes (local, or Ray Train workers), showing rank 0's progress here; then
    load their checkpoint."""
    ray = launch.launcher == "ray"
    if log:
        where = " Ray Train workers" if ray else " processes"
        log(f"training the supernet in {launch.processes}{where} ({launch.backend})")
    with _progress_bar(progress) as bar:
        tasks: dict[int, object] = {}

        def on_event(event: tuple) -> None:
            if event[0] == "step" and bar is not None:
                _, epoch, step, steps = event
                if epoch not in tasks:
                    tasks[epoch] = bar.add_task(f"supernet epoch {epoch + 1}/{trainer.total_epochs} "
                                                f"({trainer.phase(epoch)}, {launch.processes} processes)", total=steps)
                bar.update(tasks[epoch], completed=step + 1)
            elif event[0] == "epoch":
                if bar is not None and event[1].epoch in tasks:
                    bar.remove_task(tasks.pop(event[1].epoch))
                if log:
                    log(_describe(event[1], event[2]))

        if ray:
            from .launch_ray import train_ray as train
        else:
            train = train_processes
        train(space, data, config, checkpoint=checkpoint, placement=trainer.placement, plan=launch,
              on_event=on_event if (bar is not None or log) else None, steps=bar is not None)
    restore_trainer(trainer, checkpoint)


def _train_with_torchrun(space: SearchSpace, data: ImageSplits, config: SupernetConfig, checkpoint: Path,
                         trainer: SupernetTrainer, launch: LaunchPlan, *, log: Callable[[str], None] | None) -> None:
    """Rank 0 of a torchrun launch: tell the other ranks where the checkpoint is (or that there is nothing to
    train, so they end), train with them, then load what this rank wrote."""
    import torch.distributed as dist

    world = join_torchrun(launch, trainer.placement)
    train, finished = not trainer.done, False
    try:
        dist.broadcast_object_list([str(checkpoint) if train else None], src=0)
        if train:
            if log:
                log(f"training the supernet in {world.size} torchrun processes ({launch.backend})")
            train_rank(space, data, config, checkpoint=checkpoint, placement=trainer.placement, world=world,
                       events=_EpochLines(log) if log else None)
        finished = True
    finally:
        leave_group(together=finished)
    if train:
        restore_trainer(trainer, checkpoint)


class _EpochLines:
    """Rank 0's events, in its own process: one log line per epoch."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def put(self, event: tuple) -> None:
        if event[0] == "epoch":
            self.log(_describe(event[1], event[2]))


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
