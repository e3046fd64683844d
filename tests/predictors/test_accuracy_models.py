"""Accuracy models: tests generated from the registry, on a seeded synthetic task of a real space."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.accuracy import (AccuracyPredictor, FeatureEncoder, list_models, make_predictor,
                                 ranking_metrics, register_model, synthetic_accuracy)
from predictors.accuracy.models import RegressorPredictor
from search_spaces import InputError, get_space
from search_spaces.testing import small_mbv3



def unique_samples(space, n, seed):
    rng, out = np.random.default_rng(seed), {}
    while len(out) < n:
        out.setdefault(space.sample(rng), None)
    return list(out)


@pytest.fixture(scope="module")
def task():
    space = small_mbv3()
    train, test = unique_samples(space, 200, 10), unique_samples(space, 500, 11)
    return space, train, synthetic_accuracy(space, train), test, synthetic_accuracy(space, test)


def cost_ranking_tau(task) -> float:
    """τ of ranking the held-out genomes by MACs alone: every model has MACs as a feature, so it must do better."""
    space, _, _, test, y_test = task
    return ranking_metrics(y_test, np.array([space.costs(g).macs for g in test], dtype=float))["kendall_tau"]


@pytest.fixture(scope="module")
def fitted(task):
    space, train, y, _, _ = task
    cache: dict[str, AccuracyPredictor] = {}

    def get(name):
        if name not in cache:
            cache[name] = make_predictor(space, name, seed=0).fit(train, y)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list_models())
def test_every_model_ranks_held_out_genomes(name, task, fitted):
    _, _, _, test, y_test = task
    pred = fitted(name)
    p = pred.predict(test)
    lo, hi = pred.predict_interval(test)
    assert p.shape == lo.shape == hi.shape == (len(test),)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)
    tau = ranking_metrics(y_test, p)["kendall_tau"]
    assert tau > cost_ranking_tau(task), f"{name}: held-out τ {tau:.3f} is no better than ranking by MACs alone"
    report = pred.report()
    assert report["model"] == name and report["n_train"] == 200 and report["interval_method"] == "cv+"
    assert set(report["cv"]) >= {"kendall_tau", "spearman", "rmse", "mape", "n"}


def test_auto_picks_the_cross_validated_best(task, fitted):
    pred = fitted("auto")
    report = pred.report()
    scores = {name: s["kendall_tau"] for name, s in report["cv_scores"].items()}
    assert set(scores) == set(report["candidates"])
    assert report["model"] == max(scores, key=scores.get)
    assert report["cv"] == report["cv_scores"][report["model"]]
    single = fitted(report["model"])
    np.testing.assert_allclose(pred.predict(task[3][:50]), single.predict(task[3][:50]))


def test_ensemble_averages_its_members(task, fitted):
    _, _, _, test, y_test = task
    pred = fitted("ensemble")
    members = pred.report()["members"]
    mean = np.mean([fitted(m).predict(test) for m in members], axis=0)
    np.testing.assert_allclose(pred.predict(test), mean, rtol=1e-6, atol=1e-6)
    member_taus = [ranking_metrics(y_test, fitted(m).predict(test))["kendall_tau"] for m in members]
    assert ranking_metrics(y_test, pred.predict(test))["kendall_tau"] >= min(member_taus)


def test_fit_is_deterministic_by_seed(task):
    space, train, y, test, _ = task
    a = make_predictor(space, "rf", seed=3).fit(train[:60], y[:60]).predict(test[:20])
    b = make_predictor(space, "rf", seed=3).fit(train[:60], y[:60]).predict(test[:20])
    c = make_predictor(space, "rf", seed=4).fit(train[:60], y[:60]).predict(test[:20])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_analytic_features_help_on_a_cost_driven_task(task, fitted):
    space, train, y, test, y_test = task
    plain = make_predictor(space, "ridge", analytic_features=False).fit(train, y)
    tau_plain = ranking_metrics(y_test, plain.predict(test))["kendall_tau"]
    tau_costs = ranking_metrics(y_test, fitted("ridge").predict(test))["kendall_tau"]
    assert tau_costs > tau_plain + 0.03, (tau_costs, tau_plain)


def test_encoder_matches_the_space(task):
    space, train, _, _, _ = task
    enc = FeatureEncoder(space)
    X = enc.fit_transform(train)
    np.testing.assert_array_equal(X[:, :-3], np.stack([space.encode(g) for g in train]))
    for genome, row in zip(train[:20], X[:20]):
        costs = space.costs(genome)
        raw = np.log([costs.macs, costs.bitops, costs.size_bytes])
        np.testing.assert_allclose(row[-3:] * enc.scale_ + enc.mean_, raw, rtol=1e-5)
    assert enc.names[-3:] == ["log_macs", "log_bitops", "log_size_bytes"] and len(enc.names) == X.shape[1]
    arch = FeatureEncoder(space, kinds=("arch",), costs=())
    assert all(space.gene(n.split("=")[0]).kind == "arch" for n in arch.names)


def test_bit_counts_count_active_quantization_genes(task):
    space, train, _, _, _ = task
    enc = FeatureEncoder(space, costs=(), bit_counts=True)
    X = enc.fit_transform(train)
    n_onehot = sum(not n.startswith("count_") for n in enc.names)
    counts = X[:, n_onehot:] * enc.scale_ + enc.mean_
    names = enc.names[n_onehot:]
    assert names[0] == "count_w_bits=4" and "count_a_bits=8" in names
    quant = [g for g in space.genes if g.kind == "quant"]
    for genome, row in zip(train[:30], counts[:30]):
        expected = {name: 0 for name in names}
        for gene in quant:
            if space.is_active(genome, gene):  # depth-masked blocks' bit-widths do not count
                expected[f"count_{gene.name.rsplit('.', 1)[-1]}={genome[gene.name]}"] += 1
        np.testing.assert_allclose(row, [expected[n] for n in names], atol=1e-4)
    assert len({tuple(r) for r in np.round(counts, 3)}) > 10  # the counts do vary over the genomes
    assert not any(n.startswith("count_") for n in FeatureEncoder(space, kinds=("arch",), bit_counts=True).names)
    assert make_predictor(space, "ridge").encoder.bit_counts
    assert not make_predictor(space, "ridge", analytic_features=False).encoder.bit_counts


def test_bit_counts_lift_few_sample_ranking(task):
    """Accuracy driven by how many layers sit at low bits, wherever they are: 30 samples cannot learn
    that sum from one-hot genes one gene at a time; the histogram column hands it over, so the predictor
    with it ranks held-out genomes clearly better (by more than 0.1 τ) than the one without."""
    space, _, _, _, _ = task
    train, test = unique_samples(space, 30, 20), unique_samples(space, 300, 21)
    quant = [g for g in space.genes if g.kind == "quant"]

    def accuracy(genomes):
        hurt = [sum(space.is_active(gm, g) and gm[g.name] == min(g.choices) for g in quant) for gm in genomes]
        return 70 - np.array(hurt, dtype=float) + np.random.default_rng(len(genomes)).normal(0, 0.2, len(genomes))

    y, y_test = accuracy(train), accuracy(test)
    with_counts = make_predictor(space, "ridge").fit(train, y)
    without = make_predictor(space, "ridge")
    without.encoder = FeatureEncoder(space)  # the same log costs, no histogram
    without.fit(train, y)
    taus = {name: ranking_metrics(y_test, p.predict(test))["kendall_tau"]
            for name, p in (("counts", with_counts), ("without", without))}
    assert taus["counts"] > taus["without"] + 0.1, taus


def test_interactions_are_the_joint_one_hot_of_the_declared_pairs(task):
    space, train, _, _, _ = task
    pairs = space.feature_interactions()
    assert pairs == [("s1.depth", "s2.b1.a_bits"), ("s2.depth", "s3.b1.a_bits")]
    enc = FeatureEncoder(space, costs=(), interactions=True)
    X = enc.fit_transform(train)
    cols = [i for i, n in enumerate(enc.names) if "&" in n]
    assert len(cols) == 2 * 3 * 3 and enc.interactions
    for genome, row in zip(train[:30], X[:30, cols]):
        on = {enc.names[c] for c, v in zip(cols, row) if v == 1.0}
        assert on == {f"{a}={genome[a]}&{b}={genome[b]}" for a, b in pairs} and row.sum() == len(pairs)
    np.testing.assert_array_equal(X[:, [i for i in range(X.shape[1]) if i not in cols]],
                                  np.stack([space.encode(g) for g in train]))
    assert not FeatureEncoder(space, kinds=("arch",), interactions=True).interactions  # the pairs end in quant genes
    assert make_predictor(space, "ridge").encoder.interactions
    assert not make_predictor(space, "ridge", interactions=False).encoder.interactions
    assert make_predictor(space, "ridge").fit(train[:20], np.arange(20.0)).report()["interactions"] is True


def test_interactions_lift_ranking_when_the_context_decides_the_damage(task):
    """Low activation bits in a stage's first block hurt after the shallowest previous stage and help
    after deeper ones (the shape measured on the CIFAR-10 supernet, exaggerated): averaged over the
    depth their one-hot effect vanishes, so only the joint feature ranks them: the predictor with the
    interactions must rank held-out genomes better (by more than 0.08 τ) than the one without."""
    space, _, _, _, _ = task
    train, test = unique_samples(space, 100, 30), unique_samples(space, 300, 31)

    def accuracy(genomes):
        macs = np.log([space.costs(g).macs for g in genomes])
        hurt = [sum((gm[b] == space.gene(b).choices[0]) * (2.0 if gm[a] == space.gene(a).choices[0] else -1.0)
                    for a, b in space.feature_interactions()) for gm in genomes]
        noise = np.random.default_rng(len(genomes)).normal(0, 0.3, len(genomes))
        return 70 + (macs - macs.mean()) / macs.std() - 2 * np.array(hurt) + noise

    y, y_test = accuracy(train), accuracy(test)
    taus = {flag: ranking_metrics(y_test, make_predictor(space, "ridge", interactions=flag).fit(train, y)
                                  .predict(test))["kendall_tau"] for flag in (True, False)}
    assert taus[True] > taus[False] + 0.08, taus


def test_registry_refuses_duplicates_and_unknown_names(task):
    space = task[0]
    with pytest.raises(ValueError, match="already registered"):
        register_model("ridge")(lambda seed, n: None)
    with pytest.raises(ValueError, match="'auto' is reserved"):
        register_model("auto")(lambda seed, n: None)
    with pytest.raises(InputError, match="did you mean 'ridge'"):
        make_predictor(space, "ridgee")
    with pytest.raises(InputError, match="candidates"):
        make_predictor(space, "auto", candidates=["ridge", "nope"])


def test_fit_refuses_too_few_or_bad_targets(task):
    space, train, y, _, _ = task
    with pytest.raises(InputError, match="need at least 10"):
        make_predictor(space, "ridge").fit(train[:9], y[:9])
    bad = y[:20].copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match="finite"):
        make_predictor(space, "ridge").fit(train[:20], bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        RegressorPredictor(space, model="ridge").predict(train[:2])


def test_genomes_of_another_space_are_refused(task):
    space, train, y, _, _ = task
    pred = make_predictor(space, "ridge").fit(train, y)
    other = get_space("mbv3").sample(np.random.default_rng(0))
    with pytest.raises(InputError):
        pred.predict([other])


@pytest.mark.parametrize("n", [25, 50])
def test_mlp_on_few_samples_fits_its_folds_without_warnings(task, n):
    """Interval calibration refits on cross-validation folds smaller than ``n``: the MLP's batch must fit them
    (scikit-learn otherwise warns and clips it on every fold)."""
    import warnings

    space, train, y, test, _ = task
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pred = make_predictor(space, "mlp", seed=0).fit(train[:n], y[:n])
        pred.predict_interval(test[:10])
