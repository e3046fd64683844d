"""APQ-style transfer: pretrained on full-precision accuracies, it beats training from scratch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from predictors.accuracy import TransferPredictor, make_predictor, ranking_metrics, synthetic_accuracy
from search_spaces import InputError
from search_spaces.testing import small_mbv3

BITS_SCALE = 40.0  # a bits penalty large enough that the FP predictor alone ranks quantized nets worse


@pytest.fixture(scope="module")
def task():
    space = small_mbv3()
    rng = np.random.default_rng(1)
    fp = [space.sample(rng) for _ in range(500)]
    quant = [space.sample(rng) for _ in range(450)]
    y_fp = synthetic_accuracy(space, fp, quantized=False)
    y_q = synthetic_accuracy(space, quant, bits_scale=BITS_SCALE)
    return space, fp, y_fp, quant[:50], y_q[:50], quant[50:], y_q[50:]


@pytest.fixture(scope="module")
def pretrained(task):
    space, fp, y_fp = task[:3]
    return {m: TransferPredictor(space, method=m, seed=0).pretrain(fp, y_fp) for m in ("mlp", "residual", "stacked")}


def tau(pred, genomes, y):
    return ranking_metrics(y, pred.predict(genomes))["kendall_tau"]


def cost_ranking_tau(space, genomes, y):
    """τ of ranking by MACs alone: the floor any predictor given MACs as a feature must clear."""
    macs = np.array([space.costs(g).macs for g in genomes], dtype=float)
    return ranking_metrics(y, macs)["kendall_tau"]


@pytest.mark.parametrize("method", ["mlp", "residual", "stacked"])
@pytest.mark.parametrize("n", [25, 50])
def test_transfer_beats_scratch_with_few_quantized_samples(method, n, task, pretrained):
    """APQ's claim: pretrained on many FP accuracies, a few quantized samples beat any model from scratch."""
    space, _, _, train, y, test, y_test = task
    transfer = copy.deepcopy(pretrained[method]).fit(train[:n], y[:n])
    scratch = TransferPredictor(space, method=method, seed=0).fit(train[:n], y[:n])
    best_scratch = make_predictor(space, "auto", seed=0).fit(train[:n], y[:n])
    t_transfer = tau(transfer, test, y_test)
    t_scratch = max(tau(scratch, test, y_test), tau(best_scratch, test, y_test))
    assert t_transfer > t_scratch + 0.05, (t_transfer, t_scratch)
    assert t_transfer > cost_ranking_tau(space, test, y_test), t_transfer
    assert transfer.report()["model"] == "transfer" and scratch.report()["model"] == "scratch"
    lo, hi = transfer.predict_interval(test)
    assert 0.8 <= ranking_metrics(y_test, transfer.predict(test), lo, hi)["coverage"] <= 0.99


@pytest.mark.parametrize("method", ["mlp", "residual", "stacked"])
def test_fine_tuning_learns_what_the_full_precision_base_cannot(method, task, pretrained):
    """The FP base alone ranks quantized nets without their bits penalty; 50 quantized samples must add it."""
    space, _, _, train, y, test, y_test = task
    transfer = copy.deepcopy(pretrained[method]).fit(train, y)
    zero_shot = ranking_metrics(y_test, pretrained[method].predict_full_precision(test))["kendall_tau"]
    assert tau(transfer, test, y_test) > zero_shot, zero_shot


def test_quant_branch_starts_at_zero_so_fine_tuning_starts_at_the_base(task, pretrained):
    space, _, _, train, y, test, _ = task
    base = pretrained["mlp"]
    assert torch.count_nonzero(base._base.quant.weight) == 0  # pretraining never touched W_q
    frozen = copy.deepcopy(base)
    frozen.finetune_epochs = 0
    frozen.fit(train, y)
    np.testing.assert_allclose(frozen.predict(test[:40]), base.predict_full_precision(test[:40]), rtol=1e-5)
    genome = test[0]
    bits = {g.name: g.choices[0] for g in space.genes if g.kind == "quant"}
    other = space.canonical(genome.with_values(bits))
    assert frozen.predict([genome])[0] == pytest.approx(frozen.predict([other])[0], rel=1e-6)


def test_training_is_seeded_and_leaves_the_global_rng_alone(task):
    space, _, _, train, y, test, _ = task
    state = torch.random.get_rng_state()
    kw = dict(hidden=(32, 32), pretrain_epochs=30, seed=5)
    a = TransferPredictor(space, **kw).fit(train, y).predict(test[:20])
    b = TransferPredictor(space, **kw).fit(train, y).predict(test[:20])
    np.testing.assert_array_equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_compare_scratch_reports_both(task, pretrained):
    train, y = task[3], task[4]
    pred = copy.deepcopy(pretrained["residual"])
    pred.compare_scratch = True
    report = pred.fit(train, y).report()
    assert set(report["cv_scores"]) == {"transfer", "scratch"} and report["pretrained"]
    assert report["model"] == "transfer" and report["n_pretrain"] == 500 and report["method"] == "residual"


def test_bad_arguments_are_refused(task):
    space, fp, y_fp = task[:3]
    with pytest.raises(InputError, match="transfer method"):
        TransferPredictor(space, method="lora")
    with pytest.raises(InputError, match="did you mean"):
        TransferPredictor(space, method="residual", base_model="svm")
    with pytest.raises(InputError, match="did you mean 'ridge'"):
        TransferPredictor(space, method="stacked", members=["ridgee", "gp"])
    with pytest.raises(InputError, match="at least one member"):
        TransferPredictor(space, method="stacked", members=[])
    assert TransferPredictor(space, method="residual", members=[]).members == ()  # only 'stacked' uses members
    with pytest.raises(InputError, match="at least 10"):
        TransferPredictor(space).pretrain(fp[:5], y_fp[:5])
    with pytest.raises(RuntimeError, match="not pretrained"):
        TransferPredictor(space).predict_full_precision(fp[:2])


def test_stacked_from_scratch_is_the_default_predictor(task):
    """Without pretraining, ``stacked`` adds no column: it ranks like ``make_predictor``'s ensemble."""
    space, _, _, train, y, test, y_test = task
    scratch = TransferPredictor(space, method="stacked", seed=0).fit(train, y)
    default = make_predictor(space, seed=0).fit(train, y)
    assert abs(tau(scratch, test, y_test) - tau(default, test, y_test)) < 0.01
    assert scratch.report()["members"] == ["ridge", "gp", "hgb"]
