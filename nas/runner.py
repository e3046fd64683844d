"""From a config to a finished run folder: config → kind → prepare → run folder → the kind's procedure.

Why a separate layer from the CLI: notebooks, benchmarks and tests start and resume runs with the
same code path as ``qnas run``. Everything that can be wrong with the input is checked by
:func:`prepare` before a run folder is created, so a typo never leaves an empty run behind. What each
experiment kind does is its plugin's business (:mod:`nas.kinds`); this module holds what every run shares:
the device and process checks, the run folder, its lock, config copy and manifest, and the resume rules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.config import LoadedConfig, config_diff, config_to_yaml
from nas.distributed import (RESUMABLE_PREFIX, check_cluster, check_distributed, follow_torchrun,
                             is_torchrun_follower, release_cluster)
from nas.experiment import (Experiment, Reporter, RunOutcome, SilentReporter, build_space, check_dataset,
                            device_record, processes, use_threads)
from nas.kinds import get_kind, load_experiment
from nas.rundir import (CONFIG, atomic_write_text, check_new_run_dir, check_output_folder, check_run_dir,
                        create_run_dir, new_manifest, now_iso, read_manifest, update_manifest)
from nas.runlock import run_lock
from search_spaces import InputError

__all__ = ["Reporter", "SilentReporter", "Experiment", "RunOutcome", "build_space",
           "check_dataset", "prepare", "summary", "check_destination", "start_run", "resume_run"]


def check_device(loaded: LoadedConfig) -> Any:
    """The config's ``device`` section resolved on this machine; its errors point at the config line."""
    try:
        return loaded.config.device.placement()
    except InputError as err:
        raise loaded.error(err.field or "device", err.detail) from None


def prepare(loaded: LoadedConfig, reporter: Reporter | None = None) -> Experiment:
    """Build and cross-check everything; every problem is an InputError pointing into the config."""
    reporter = reporter or SilentReporter()
    placement = check_device(loaded)
    launch = check_distributed(loaded, placement)
    exp = get_kind(loaded.config.kind, source=loaded.source).prepare(loaded, reporter, placement, launch)
    check_cluster(loaded, launch, placement)  # launcher: ray: connect and check the cluster; last, as it is slow
    return exp


def summary(exp: Experiment) -> list[tuple[str, str]]:
    """``(label, text)`` rows describing what a run of this config will do (``qnas validate`` prints them)."""
    return get_kind(exp.loaded.config.kind).summary(exp)


def check_destination(loaded: LoadedConfig, out: str | Path | None = None) -> None:
    """Where the run folder would go must be usable before any work: ``out`` new (or empty) and writable,
    else ``output.root`` writable; one InputError naming ``--out`` or the config line otherwise."""
    if out is not None:
        check_new_run_dir(out)
        return
    try:
        check_output_folder(loaded.config.output.root)
    except InputError as err:
        raise loaded.error("output.root", err.detail) from None


def start_run(config_path: str | Path, *, overrides: Sequence[str] = (), out: str | Path | None = None,
              reporter: Reporter | None = None) -> RunOutcome:
    """``qnas run CONFIG``: check everything, create the run folder, run the experiment's kind."""
    reporter, start = reporter or SilentReporter(), time.perf_counter()
    loaded = load_experiment(config_path, overrides)
    if is_torchrun_follower():  # rank 0 creates and owns the run folder; this rank only trains
        return follow_torchrun(loaded)
    check_destination(loaded, out)
    exp = prepare(loaded, reporter)
    config = loaded.config
    kind = get_kind(config.kind)
    try:  # from here on, whatever happens, a Ray connection prepare opened is closed
        run_dir = create_run_dir(config.output.root, config.name, out=out)
        with run_lock(run_dir):
            reporter.info(f"run folder {run_dir}")
            atomic_write_text(run_dir / CONFIG, config_to_yaml(config))
            update_manifest(run_dir, **new_manifest(seed=config.seed, space=kind.space_info(exp)),
                            device=device_record(exp), processes=processes(exp))
            result = _run_kind(exp, run_dir, reporter, resume=False)
    finally:
        release_cluster(exp.launch)
    return RunOutcome(run_dir, result, time.perf_counter() - start)


def _run_kind(exp: Experiment, run_dir: Path, reporter: Reporter, *, resume: bool) -> Any:
    """Run the kind's procedure with the manifest's status kept: running, then finished (with the kind's
    figures), failed or interrupted."""
    kind = get_kind(exp.loaded.config.kind)
    use_threads(exp)
    with kind.acquire(run_dir) as handle:  # e.g. the journal: a second writer is refused before anything changes
        update_manifest(run_dir, status="running")
        try:
            result, fields = kind.run(exp, run_dir, reporter, resume=resume, handle=handle)
        except BaseException as err:
            update_manifest(run_dir, status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                            finished_at=now_iso())
            raise
    update_manifest(run_dir, status="finished", finished_at=now_iso(), **fields)
    return result


def resume_run(run_dir: str | Path, *, config_path: str | Path | None = None, overrides: Sequence[str] = (),
               reporter: Reporter | None = None) -> RunOutcome:
    """``qnas run --resume RUN_DIR``: continue the run with what it recorded (the search replays its journal)."""
    reporter, start = reporter or SilentReporter(), time.perf_counter()
    run = check_run_dir(run_dir)
    if is_torchrun_follower():  # rank 0 holds the lock and resumes the run; this rank only trains
        return follow_torchrun(_resumable_config(run, config_path, overrides))
    with run_lock(run):  # first: another process may still be running this folder
        stored = _resumable_config(run, config_path, overrides)
        read_manifest(run)  # a damaged manifest or journal stops the resume before any work
        get_kind(stored.config.kind).check_resume(stored, run)
        exp = prepare(stored, reporter)
        try:
            result = _run_kind(exp, run, reporter, resume=True)
        finally:
            release_cluster(exp.launch)
    return RunOutcome(run, result, time.perf_counter() - start)


def _resumable_config(run: Path, config_path: str | Path | None, overrides: Sequence[str]) -> LoadedConfig:
    """The run's config; a given config or overrides may differ from it only in what a resume may change."""
    stored = load_experiment(run / CONFIG)
    if config_path is None and not overrides:
        return stored
    given = load_experiment(config_path if config_path is not None else run / CONFIG, overrides)
    diff = [d for d in config_diff(stored.config, given.config) if not d.startswith(RESUMABLE_PREFIX)]
    if diff:
        raise InputError("differs from the run's config.yaml (run -> given): " + "; ".join(diff[:8])
                         + ("; ..." if len(diff) > 8 else "") + "; start a new run instead", source=given.source)
    return given  # equal but for the training processes, which a resume may change
