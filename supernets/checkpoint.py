"""Supernet checkpoints: self-describing, validated on load, read with ``weights_only=True``.

A checkpoint carries the search space (name + options + fingerprint), the training config, the
model/optimizer/scheduler state, the sampling RNG states and the epoch history, so training resumes
exactly and a checkpoint cannot silently be loaded into a different space or config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from search_spaces import InputError, SearchSpace, space_from_dict
from search_spaces.atomic import atomic_write_with

from .families import build_supernet
from .supernet import QuantSupernet
from .training import EpochLog, SupernetConfig, SupernetTrainer

__all__ = ["save_checkpoint", "read_checkpoint", "load_supernet", "restore_trainer", "FORMAT"]

FORMAT = "qnas-supernet/1"
_KEYS = ("format", "space", "fingerprint", "image_size", "config", "epoch", "model", "history")
_TYPES: dict[str, type | tuple[type, ...]] = {"space": dict, "space.name": str, "space.options": dict, "fingerprint": str,
                           "image_size": (int, type(None)), "config": dict, "epoch": int, "model": dict, "history": list}
"""What each entry read back must be ("space.x": inside ``space``); anything else is a damaged or foreign file."""


def save_checkpoint(trainer: SupernetTrainer, path: str | Path) -> Path:
    """Write the trainer's full state atomically (temp file + ``os.replace``)."""
    path = Path(path)
    net = trainer.net
    state = {
        "format": FORMAT,
        "space": {"name": net.space.name, "options": net.space.options()},
        "fingerprint": net.space.fingerprint(),
        "image_size": net.image_size,
        "seed": trainer.cfg.seed,
        "config": trainer.cfg.model_dump(),
        "epoch": trainer.epoch,
        "model": net.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "rng": {"numpy": trainer.rng.bit_generator.state, "torch": trainer.torch_gen.get_state()},
        "history": [dataclasses.asdict(h) for h in trainer.history],
    }
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))
    return path


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters (for one-line errors)."""
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and structurally check a checkpoint; any problem names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("supernet checkpoint not found", source=path.resolve())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or not a torch file at all
        raise InputError(f"cannot be read as a qnas supernet checkpoint ({type(err).__name__}: "
                         f"{_first_line(err)})", source=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(f"not a qnas supernet checkpoint: expected format {FORMAT!r}, found {found!r}",
                         source=path, field="format")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise InputError(f"checkpoint is missing the entries {missing}", source=path)
    for key, kind in _TYPES.items():  # "space" comes before "space.name", so it is a dict by then
        outer, _, inner = key.partition(".")
        value = state[outer].get(inner) if inner else state[outer]
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise InputError(f"damaged checkpoint: expected {expected}, got {type(value).__name__}",
                             source=path, field=key)
    return state


def _check_space(state: dict[str, Any], space: SearchSpace, path: Path) -> None:
    if state["fingerprint"] == space.fingerprint():
        return
    saved = state["space"]
    if saved["name"] != space.name:
        raise InputError(f"checkpoint is for search space {saved['name']!r}, not {space.name!r}",
                         source=path, field="space.name")
    current = space.options()
    diffs = [f"{k}: checkpoint {saved['options'].get(k)!r} vs config {current.get(k)!r}"
             for k in sorted(set(current) | set(saved["options"])) if saved["options"].get(k) != current.get(k)]
    raise InputError(f"checkpoint was trained on a different {space.name!r} space: {'; '.join(diffs)}",
                     source=path, field="space.options")


def load_supernet(path: str | Path, *, space: SearchSpace | None = None) -> tuple[QuantSupernet, dict[str, Any]]:
    """Rebuild the supernet stored at ``path`` (refusing a different ``space`` if one is given); of the
    space's family (:mod:`supernets.families`), a :class:`QuantSupernet` for block spaces."""
    path = Path(path)
    state = read_checkpoint(path)
    if space is not None:
        _check_space(state, space, path)
    built = space or space_from_dict(state["space"], source=str(path))
    net = build_supernet(built, image_size=state["image_size"])
    try:
        result = net.load_state_dict(state["model"], strict=False)
    except (RuntimeError, TypeError, AttributeError) as err:  # shapes of another space, or not tensors
        raise InputError(f"weights do not match the space: {_first_line(err)}", source=path,
                         field="model") from None
    if result.missing_keys or result.unexpected_keys:
        raise InputError(f"weights do not match the space: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}", source=path, field="model")
    return net, state


def restore_trainer(trainer: SupernetTrainer, path: str | Path) -> None:
    """Continue training from ``path``: same space, same config, or a clear error naming the difference."""
    path = Path(path)
    state = read_checkpoint(path)
    _check_space(state, trainer.net.space, path)
    try:
        saved_cfg = SupernetConfig(**state["config"])
    except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        raise InputError(f"damaged checkpoint: its training config is invalid ({_first_line(err)})",
                         source=path, field="config") from None
    if saved_cfg != trainer.cfg:
        now = trainer.cfg.model_dump()
        diffs = [f"{k}: checkpoint {v!r} vs config {now[k]!r}" for k, v in saved_cfg.model_dump().items()
                 if now[k] != v]
        raise InputError(f"checkpoint was trained with a different supernet config: {'; '.join(diffs)}",
                         source=path, field="config")
    trainer.net.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.rng.bit_generator.state = state["rng"]["numpy"]
    trainer.torch_gen.set_state(state["rng"]["torch"])
    trainer.epoch = int(state["epoch"])
    trainer.history = [EpochLog(**h) for h in state["history"]]
