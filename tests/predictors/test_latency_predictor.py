"""Latency predictor: sum − overhead·(blocks+1), calibration, bit mapping, strict mode, flagged fallback,
and the vectorised genome path agreeing with the per-block path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from predictors.latency import (Entry, LatencyFallback, LatencyPredictor, LatencyTable, SlotPlan, TableHeader,
                                fit_calibration, map_bits, raw_latency)
from search_spaces import BlockSpec, InputError
from search_spaces.costs import block_costs
from search_spaces.testing import tiny_mbv3

STEM = BlockSpec("conv", 16, 3, 8, kernel=3, act="hswish", w_bits=8, a_bits=8, slot="stem")
MID = BlockSpec("mbconv", 16, 8, 16, kernel=3, stride=2, mid_ch=24, w_bits=8, a_bits=8, slot="s1.b1")
HEAD = BlockSpec("head", 8, 16, 10, act="hswish", w_bits=8, a_bits=8, slot="head")


def hand_table(**header) -> LatencyTable:
    values = {"device": "test", "backend": "torch-int8", "space": "mbv3", "per_call_overhead_ms": 0.01,
              "calibration_scale": 1.5, "calibration_offset_ms": 0.2, "bits_measured_as": {4: 8, 6: 8}, **header}
    return LatencyTable(TableHeader(**values), [Entry(STEM, 0.3, 0.01, 100), Entry(MID, 1.0, 0.02, 100),
                                                 Entry(HEAD, 0.5, 0.01, 100)])


def test_sum_overhead_and_calibration():
    estimate = LatencyPredictor(hand_table(), strict=True).predict([STEM, MID, HEAD])
    raw = 0.3 + 1.0 + 0.5 - 0.01 * (3 + 1)
    assert estimate.raw_ms == pytest.approx(raw)
    assert estimate.ms == pytest.approx(1.5 * raw + 0.2)
    assert estimate.n_blocks == 3 and not estimate.used_fallback and estimate.missing_keys == ()


def test_bits_are_looked_up_as_measured():
    predictor = LatencyPredictor(hand_table(), strict=True)
    low = replace(MID, w_bits=4, a_bits=6)
    assert predictor.block_ms(low) == (1.0, False)
    assert map_bits(low, {4: 8, 6: 8}).key() == MID.key()


def test_strict_mode_names_the_missing_key():
    missing = replace(MID, kernel=5)
    with pytest.raises(InputError) as info:
        LatencyPredictor(hand_table(), strict=True).predict([STEM, missing, HEAD])
    assert info.value.field == missing.key()
    assert f"no entry for block {missing.key()} (strict mode" in str(info.value)
    with pytest.raises(InputError, match="no fallback"):
        LatencyPredictor(hand_table(), fallback=None).predict([STEM, missing, HEAD])


def test_fallback_fills_and_flags_missing_entries():
    missing = replace(MID, kernel=5, mid_ch=48)
    estimate = LatencyPredictor(hand_table()).predict([STEM, missing, missing, HEAD])
    assert estimate.used_fallback and estimate.missing_keys == (missing.key(),)
    assert np.isfinite(estimate.ms) and estimate.ms > 0


def synthetic_table(space, *, drop: int = 0) -> LatencyTable:
    """Entries = 0.01 ms + 1 ns per MAC for every distinct INT8 block of the space (minus ``drop`` of them)."""
    mapping = {4: 8, 6: 8}
    blocks = SlotPlan.for_space(space).distinct_blocks(lambda b: replace(map_bits(b, mapping), slot=""))
    entries = [Entry(b, 0.01 + 1e-6 * block_costs(b).macs, 0.0, 10) for b in blocks]
    header = TableHeader(device="test", backend="torch-int8", space=space.name, bits_measured_as=mapping,
                         per_call_overhead_ms=0.002, calibration_scale=1.2, calibration_offset_ms=0.1)
    return LatencyTable(header, entries[:len(entries) - drop])


def test_predict_genomes_matches_per_block_path():
    space = tiny_mbv3()
    predictor = LatencyPredictor(synthetic_table(space), strict=True)
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(200)]
    batch = predictor.predict_genomes(space, genomes)
    assert batch.ms == pytest.approx([predictor.predict(space.blocks(g)).ms for g in genomes])
    assert not batch.used_fallback.any()
    by_index = predictor.predict_indices(space, np.array([space.to_indices(g) for g in genomes]))
    assert by_index.ms == pytest.approx(batch.ms)


def test_predict_genomes_flags_fallback_and_strict_raises():
    space = tiny_mbv3()
    table = synthetic_table(space, drop=3)
    rng = np.random.default_rng(1)
    genomes = [space.sample(rng) for _ in range(300)]
    predictor = LatencyPredictor(table)
    batch = predictor.predict_genomes(space, genomes)
    per_block = [predictor.predict(space.blocks(g)) for g in genomes]
    assert batch.used_fallback.tolist() == [e.used_fallback for e in per_block] and batch.used_fallback.any()
    assert batch.ms == pytest.approx([e.ms for e in per_block])
    with pytest.raises(InputError, match="no entry for block"):
        LatencyPredictor(table, strict=True).predict_genomes(space, genomes)


def test_fallback_extrapolates_with_macs():
    space = tiny_mbv3()
    table = synthetic_table(space)
    entries = list(table.entries.values())
    fallback = LatencyFallback().fit([e.spec for e in entries], [e.mean_ms for e in entries])
    big = max((e.spec for e in entries), key=lambda b: block_costs(b).macs)
    bigger = replace(big, in_ch=big.in_ch * 2, mid_ch=big.mid_ch * 2)
    assert fallback.predict([bigger])[0] > max(e.mean_ms for e in entries)
    pred = fallback.predict([e.spec for e in entries])
    assert np.median(np.abs(pred / np.array([e.mean_ms for e in entries]) - 1)) < 0.1
    with pytest.raises(InputError, match="at least 2 table entries"):
        LatencyFallback().fit([entries[0].spec], [entries[0].mean_ms])


def test_calibration_fit():
    raw = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    cal = fit_calibration(raw, 1.2 * raw + 0.3)
    assert cal.scale == pytest.approx(1.2) and cal.offset_ms == pytest.approx(0.3) and cal.mape < 1e-9
    scale_only = fit_calibration(raw, 1.2 * raw * np.array([1.01, 0.99, 1.0, 1.01, 0.99]))
    assert scale_only.offset_ms == 0.0 and scale_only.scale == pytest.approx(1.2, rel=0.01)
    assert fit_calibration(raw, 1.2 * raw + 0.3, model="scale").offset_ms == 0.0
    one = fit_calibration([2.0], [3.0])
    assert (one.scale, one.offset_ms, one.n) == (1.5, 0.0, 1)
    assert raw_latency(10.0, 4, 0.5) == pytest.approx(7.5)
    with pytest.raises(ValueError):
        fit_calibration([1.0, -1.0], [1.0, 2.0])


def test_auto_calibration_needs_a_clear_gain_for_the_offset():
    """Noisy subnets: the offset is kept only when it cuts the leave-one-out error by a fifth or more."""
    from predictors.latency.calibration import AFFINE_GAIN, _loo_error

    rng = np.random.default_rng(0)
    raw = np.linspace(1.0, 2.0, 10)
    chosen = {"affine": 0, "scale": 0}
    for offset in (0.0, 0.05, 0.1, 0.2, 0.4):
        for _ in range(20):
            meas = (1.1 * raw + offset) * (1 + 0.04 * rng.standard_normal(raw.size))
            gain = _loo_error(raw, meas, True) / _loo_error(raw, meas, False)
            cal = fit_calibration(raw, meas)
            assert (cal.offset_ms != 0.0) == (gain < AFFINE_GAIN), gain
            chosen["affine" if cal.offset_ms else "scale"] += 1
    assert chosen["affine"] > 0 and chosen["scale"] > 0  # both branches were exercised
