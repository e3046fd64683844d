"""The supernet accuracy evaluator as a factory: weights and data once per worker, not per candidate.

Every worker measures from the same trained supernet: the factory carries its state (including the
LSQ steps of every bit-width, initialised by :class:`SubnetEvaluator` before the state is taken),
so local and Ray results are identical whatever the order subnets are evaluated in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from nas.accuracy import SupernetAccuracyEvaluator
from search_spaces import space_from_dict
from supernets.device import resolve_placement
from supernets.evaluate import SubnetEvaluator
from supernets.families import build_supernet

__all__ = ["SupernetAccuracyFactory"]

METRICS = dict(SupernetAccuracyEvaluator.metrics_declared)
BOUNDS = dict(SupernetAccuracyEvaluator.bounds)


@dataclass(frozen=True, eq=False)
class SupernetAccuracyFactory:
    """Everything a worker needs to measure subnet accuracy: space, weights, BN-calibration and validation data.

    Tensors, not paths: the object is put in Ray's object store once and each actor builds its
    supernet from it, so workers on other machines need neither the checkpoint nor the dataset files.
    In this process, :meth:`build` reuses the live evaluator it was made from (no second copy).
    """

    space: Mapping[str, Any]
    fingerprint: str
    image_size: int | None
    state: Mapping[str, Tensor]
    calib_x: Tensor  # (N, C, H, W) BN-calibration images
    eval_x: Tensor  # (M, C, H, W) validation images
    eval_y: Tensor  # (M,) labels
    batch_size: int
    quantize: bool = True
    at_once: int = 1  # subnets measured concurrently on the worker's device (supernet.subnets_at_once)
    _live: SubnetEvaluator | None = field(default=None, repr=False)

    metrics = METRICS
    bounds = BOUNDS

    @classmethod
    def from_subnets(cls, subnets: SubnetEvaluator, *, at_once: int = 1) -> SupernetAccuracyFactory:
        """The recipe of a built :class:`SubnetEvaluator` (its supernet's current weights and its data); ``at_once``
        subnets measured concurrently by each evaluator built from it."""
        net = subnets.supernet
        state = {k: v.cpu() for k, v in net.state_dict().items()}  # CPU tensors (views there); Ray serialises once
        calib = torch.cat(list(subnets.calib)) if subnets.calib else subnets.eval_x[:0]
        return cls({"name": net.space.name, "options": net.space.options()}, net.space.fingerprint(),
                   net.image_size, state, calib.cpu(), subnets.eval_x.cpu(), subnets.eval_y.cpu(),
                   subnets.batch_size, subnets.quantize, at_once, subnets)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_live"}  # the live evaluator stays here

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in {**state, "_live": None}.items():
            object.__setattr__(self, key, value)

    def build(self) -> SupernetAccuracyEvaluator:
        """The evaluator: the live one in the process that made this factory, else rebuilt from the tensors."""
        if self._live is not None:
            return SupernetAccuracyEvaluator(self._live, at_once=self.at_once)
        space = space_from_dict(self.space, source="SupernetAccuracyFactory")
        if space.fingerprint() != self.fingerprint:
            raise RuntimeError(f"search space {space.name!r} differs on this worker (fingerprint {space.fingerprint()}"
                               f" vs {self.fingerprint}); install the same qnas version on every node")
        net = build_supernet(space, image_size=self.image_size)
        net.load_state_dict(dict(self.state), strict=True)
        placement = resolve_placement()  # the worker's GPU when Ray gave it one (executor.resources: {GPU: 1})
        placement.put_module(net)
        subnets = SubnetEvaluator(net.eval(), self.calib_x, self.eval_x, self.eval_y, batch_size=self.batch_size,
                                  quantize=self.quantize, placement=placement)
        return SupernetAccuracyEvaluator(subnets, at_once=self.at_once)
