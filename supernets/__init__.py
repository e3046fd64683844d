"""Quantized weight-sharing supernets: elastic layers, LSQ quantizers, training, evaluation, extraction.

Heavy modules (torch) load on first use of their names, so ``import supernets`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QuantSupernet": "supernets.supernet",
    "SupernetConfig": "supernets.config",
    "SupernetTrainer": "supernets.training",
    "EpochLog": "supernets.training",
    "SubnetEvaluator": "supernets.evaluate",
    "bn_recalibrated": "supernets.evaluate",
    "fit_supernet": "supernets.fit",
    "save_checkpoint": "supernets.checkpoint",
    "load_supernet": "supernets.checkpoint",
    "StaticNet": "supernets.static_net",
    "build_block": "supernets.blocks",
    "Placement": "supernets.device",
    "resolve_placement": "supernets.device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'supernets' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
