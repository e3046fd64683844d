"""Which supernet a search space trains: a registry from space name to supernet class.

Spaces of blocks (``mbv3``, ``resnet``, ``spaceevo`` and user spaces built from registered block ops) train the
CNN :class:`~supernets.supernet.QuantSupernet`; a space with layers of another shape registers its own class
here (the ``transformer`` space: :class:`~supernets.transformer.TransformerSupernet`). Every supernet class takes
``(space, *, image_size, seed)``, subclasses :class:`~supernets.selection.SubnetSelection` and offers the same
contract (``run``, ``subnet``, ``extract``, ``init_quantizers``, ``sort_channels``, ``check_splits``), so
training, evaluation and search drive any of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from search_spaces import SearchSpace
from search_spaces.registries import Registry

__all__ = ["build_supernet", "register_supernet", "supernet_class"]

_FAMILIES: Registry[Callable[[], type[nn.Module]]] = Registry("supernet family", field="search_space.name")


def register_supernet(space_name: str, locate: Callable[[], type[nn.Module]]) -> None:
    """Train spaces named ``space_name`` with the class ``locate()`` returns (imported on first use)."""
    _FAMILIES.register(space_name, locate)


def supernet_class(space: SearchSpace) -> type[nn.Module]:
    """The supernet class of ``space`` (the CNN supernet unless its name registered another)."""
    if space.name in _FAMILIES:
        return _FAMILIES.get(space.name)()
    from .supernet import QuantSupernet

    return QuantSupernet


def build_supernet(space: SearchSpace, *, image_size: int | None = None, seed: int = 0) -> Any:
    """A freshly initialised supernet for ``space`` (seeded, without touching the caller's RNG)."""
    return supernet_class(space)(space, image_size=image_size, seed=seed)


register_supernet("transformer",
                  lambda: importlib.import_module("supernets.transformer.supernet").TransformerSupernet)
