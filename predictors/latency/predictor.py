"""Subnet latency from a table: ``calibration(Σ block entries − overhead × (blocks + 1))``.

Blocks the table lacks are filled by the learned fallback (:mod:`.fallback`) and flagged; with
``strict=True`` a missing block is an error naming its key instead. Searches score thousands of
genomes per round, so :meth:`LatencyPredictor.predict_genomes` precomputes, per slot of the space,
the latency of every combination of the genes deciding that slot (:mod:`.slots`) and then sums
array lookups (checked against the per-block path on sampled genomes when first built).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from search_spaces import BlockSpec, Genome, InputError, SearchSpace

from .calibration import Calibration, raw_latency
from .fallback import LatencyFallback
from .slots import SlotPlan
from .table import LatencyTable, map_bits

__all__ = ["LatencyEstimate", "LatencyBatch", "LatencyPredictor"]


@dataclass(frozen=True)
class LatencyEstimate:
    """Predicted latency of one subnet; ``missing_keys`` were not in the table (filled by the fallback)."""

    ms: float
    raw_ms: float
    n_blocks: int
    missing_keys: tuple[str, ...] = ()

    @property
    def used_fallback(self) -> bool:
        return bool(self.missing_keys)


@dataclass(frozen=True)
class LatencyBatch:
    """Predicted latencies of many genomes, and which of them needed the fallback."""

    ms: np.ndarray  # (n,)
    used_fallback: np.ndarray  # (n,) bool


@dataclass
class _SlotArrays:
    values: list[np.ndarray]  # per slot: ms of every combination (NaN: missing in strict mode)
    fallback: list[np.ndarray]  # per slot: bool, value came from the fallback
    keys: list[np.ndarray]  # per slot: table key of every combination (for error messages)


class LatencyPredictor:
    """Predict subnet latency from a :class:`LatencyTable`.

    Args:
        table: the loaded table (its header carries overhead, calibration and bit mapping).
        strict: a block missing from the table raises :class:`InputError` instead of using the fallback.
        fallback: ``"auto"`` (a :class:`LatencyFallback` fitted on the table's entries on first use), a
            fitted or unfitted :class:`LatencyFallback`, or ``None`` (missing blocks raise, like strict).
        source: how errors name the table (defaults to "latency table (<backend> on <device>)").
    """

    def __init__(self, table: LatencyTable, *, strict: bool = False,
                 fallback: LatencyFallback | Literal["auto"] | None = "auto", source: str | None = None) -> None:
        self.table, self.strict = table, strict
        self.source = source or f"latency table ({table.header.backend} on {table.header.device})"
        self._fallback = LatencyFallback() if fallback == "auto" else fallback
        self._arrays: dict[tuple[str, str], _SlotArrays | None] = {}
        h = table.header
        self.calibration = Calibration(h.calibration_scale, h.calibration_offset_ms, h.calibration_subnets)

    # ---- per block ------------------------------------------------------------------------------------
    def _fallback_ms(self, blocks: Sequence[BlockSpec]) -> np.ndarray:
        fb = self._fallback
        if fb is None:
            raise InputError(f"no entry for block {blocks[0].key()} and no fallback", source=self.source,
                             field=blocks[0].key())
        if not fb.fitted:
            entries = list(self.table.entries.values())
            fb.fit([e.spec for e in entries], [e.mean_ms for e in entries], source=self.source)
        return fb.predict(blocks)

    def _block_values(self, blocks: Sequence[BlockSpec]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(ms per block, from-fallback flags, table keys); missing blocks are NaN in strict mode."""
        mapped = [map_bits(b, self.table.header.bits_measured_as) for b in blocks]
        keys = [m.key() for m in mapped]
        ms = np.array([e.mean_ms if (e := self.table.entries.get(k)) else np.nan for k in keys], dtype=np.float64)
        missing = np.isnan(ms)
        if missing.any() and not self.strict:
            ms[missing] = self._fallback_ms([m for m, miss in zip(mapped, missing) if miss])
        return ms, missing, keys

    def _raise_missing(self, key: str) -> None:
        raise InputError(f"no entry for block {key} (strict mode: add it to the table, re-profile, or set "
                         "strict: false to use the learned fallback)", source=self.source, field=key)

    def block_ms(self, block: BlockSpec) -> tuple[float, bool]:
        """(latency in ms, whether the fallback produced it) of one block."""
        ms, missing, keys = self._block_values([block])
        if self.strict and missing[0]:
            self._raise_missing(keys[0])
        return float(ms[0]), bool(missing[0])

    def predict(self, blocks: Sequence[BlockSpec]) -> LatencyEstimate:
        """Calibrated latency of a subnet given as its blocks (stem, blocks, head)."""
        ms, missing, keys = self._block_values(blocks)
        missing_keys = tuple(dict.fromkeys(k for k, m in zip(keys, missing) if m))
        if self.strict and missing_keys:
            self._raise_missing(missing_keys[0])
        raw = float(raw_latency(ms.sum(), len(blocks), self.table.header.per_call_overhead_ms))
        return LatencyEstimate(float(self.calibration.apply(raw)), raw, len(blocks), missing_keys)

    # ---- many genomes -----------------------------------------------------------------------------
    def predict_genomes(self, space: SearchSpace, genomes: Sequence[Genome]) -> LatencyBatch:
        """Calibrated latencies of many genomes, through per-slot lookups vectorised over the genomes."""
        arrays = self._slot_arrays(space)
        if arrays is None:
            estimates = [self.predict(space.blocks(g)) for g in genomes]
            return LatencyBatch(np.array([e.ms for e in estimates]), np.array([e.used_fallback for e in estimates]))
        return self._predict_indices(space, SlotPlan.for_space(space).indices(genomes), arrays)

    def predict_indices(self, space: SearchSpace, indices: np.ndarray) -> LatencyBatch:
        """Like :meth:`predict_genomes` for an (n, n_genes) matrix of choice indices (``space.to_indices``)."""
        arrays = self._slot_arrays(space)
        if arrays is None:
            return self.predict_genomes(space, [space.from_indices(row) for row in indices])
        return self._predict_indices(space, np.asarray(indices, dtype=np.int64), arrays)

    def _predict_indices(self, space: SearchSpace, idx: np.ndarray, arrays: _SlotArrays) -> LatencyBatch:
        plan = SlotPlan.for_space(space)
        total, count = np.zeros(len(idx)), np.zeros(len(idx), dtype=np.int64)
        used = np.zeros(len(idx), dtype=bool)
        for s, slot in enumerate(plan.slots):
            present, flat = plan.present(slot, idx), plan.flat(slot, idx)
            values = arrays.values[s][flat]
            if self.strict and np.isnan(values[present]).any():
                self._raise_missing(str(arrays.keys[s][flat[present & np.isnan(values)][0]]))
            total += np.where(present, values, 0.0)
            count += present
            used |= present & arrays.fallback[s][flat]
        raw = raw_latency(total, count, self.table.header.per_call_overhead_ms)
        return LatencyBatch(np.asarray(self.calibration.apply(raw), dtype=np.float64), used)

    def _slot_arrays(self, space: SearchSpace) -> _SlotArrays | None:
        key = (space.name, space.fingerprint())
        if key not in self._arrays:
            self._arrays[key] = self._build_arrays(space)
        return self._arrays[key]

    def _build_arrays(self, space: SearchSpace) -> _SlotArrays | None:
        try:
            plan = SlotPlan.for_space(space)
        except ValueError as err:
            warnings.warn(f"latency: per-genome prediction for space {space.name!r} ({err})", stacklevel=3)
            return None
        arrays = _SlotArrays([], [], [])
        for slot in plan.slots:
            found = [(flat, b) for flat, b in plan.slot_blocks(slot) if b is not None]
            values = np.zeros(slot.combos)
            flags = np.zeros(slot.combos, dtype=bool)
            keys = np.full(slot.combos, "", dtype=object)
            if found:
                ms, missing, ks = self._block_values([b for _, b in found])
                at = np.array([f for f, _ in found])
                values[at], flags[at], keys[at] = ms, missing, ks
            arrays.values.append(values)
            arrays.fallback.append(flags)
            arrays.keys.append(keys)
        return arrays if self._self_check(space, plan, arrays) else None

    def _self_check(self, space: SearchSpace, plan: SlotPlan, arrays: _SlotArrays) -> bool:
        """The lookup path must give what the per-block path gives; otherwise use the per-block path."""
        rng = np.random.default_rng(0)
        genomes = [space.sample(rng) for _ in range(8)] + [space.smallest(), space.largest()]
        idx = plan.indices(genomes)
        for row, genome in zip(idx, genomes):
            blocks = space.blocks(genome)
            ms, _, _ = self._block_values(blocks)
            got = sum(float(arrays.values[s][plan.flat(slot, row[None])[0]])
                      for s, slot in enumerate(plan.slots) if plan.present(slot, row[None])[0])
            n = sum(bool(plan.present(slot, row[None])[0]) for slot in plan.slots)
            if n != len(blocks) or not np.isclose(got, ms.sum(), equal_nan=True):
                warnings.warn(f"latency: slot lookup disagrees with space.blocks for {space.name!r}; "
                              "using per-genome prediction", stacklevel=4)
                return False
        return True
