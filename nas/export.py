"""Saving extracted subnets as deployable files.

Models are saved with ``torch.export`` (``.pt2``; TorchScript is deprecated): loadable with
``torch.export.load(path).module()`` and plain PyTorch, no qnas needed, any batch size.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["save_exported"]


def save_exported(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """``torch.export`` the model with a dynamic batch dimension and save it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example[:1].expand(2, *example.shape[1:]).contiguous()  # batch 2: batch 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        torch.export.save(program, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
