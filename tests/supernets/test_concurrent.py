"""Several subnets measured at once: the same metrics as one after another, the supernet left as it was."""

import numpy as np
import pytest
import torch

from nas.accuracy import SupernetAccuracyEvaluator
from supernets.concurrent import ConcurrentSubnets, replica
from supernets.evaluate import SubnetEvaluator


@pytest.fixture(scope="module")
def subnets(tiny_quant_supernet):
    space, net, data = tiny_quant_supernet
    ev = SubnetEvaluator(net.eval(), data.train_x[:64], data.val_x[:96], data.val_y[:96], batch_size=32)
    genomes = [space.sample(np.random.default_rng(i)) for i in range(7)] + [space.largest(), space.smallest()]
    return ev, genomes


def test_concurrent_measurements_equal_sequential_ones_and_cover_every_genome(subnets):
    ev, genomes = subnets
    before = {k: v.clone() for k, v in ev.supernet.state_dict().items()}
    sequential = [ev.measure(g) for g in genomes]
    many = ConcurrentSubnets(ev, at_once=3)
    try:
        got = list(many.measure_iter(genomes))
    finally:
        many.close()
    assert sorted(p for p, _ in got) == list(range(len(genomes)))
    for position, metrics in got:
        assert metrics["accuracy"] == sequential[position]["accuracy"]
        assert metrics["val_loss"] == pytest.approx(sequential[position]["val_loss"], rel=1e-6)
    after = ev.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics and weights restored


def test_replica_owns_its_modules_and_shares_the_images(subnets):
    ev, _ = subnets
    twin = replica(ev)
    assert twin.eval_x is ev.eval_x and twin.calib is ev.calib
    mine = {id(p) for p in ev.supernet.parameters()}
    assert not mine & {id(p) for p in twin.supernet.parameters()}
    assert all(torch.equal(a, b) for a, b in zip(ev.supernet.state_dict().values(),
                                                 twin.supernet.state_dict().values()))


def test_accuracy_evaluator_with_several_at_once_reports_every_position(subnets):
    ev, genomes = subnets
    one = SupernetAccuracyEvaluator(ev).evaluate(genomes)
    three = SupernetAccuracyEvaluator(ev, at_once=3)
    assert [m["accuracy"] for m in three.evaluate(genomes)] == [m["accuracy"] for m in one]
    assert sorted(p for p, _ in three.evaluate_iter(genomes[:2])) == [0, 1]


def test_a_failing_subnet_is_raised_to_the_caller(subnets):
    ev, genomes = subnets
    many = ConcurrentSubnets(ev, at_once=2)
    bad = genomes[0].with_values({next(iter(genomes[0])): "no such value"})
    try:
        with pytest.raises(Exception):
            list(many.measure_iter([genomes[1], bad, genomes[2]]))
        assert len(list(many.measure_iter(genomes[:2]))) == 2  # still usable: every replica went back
    finally:
        many.close()
    with pytest.raises(ValueError, match="at_once"):
        ConcurrentSubnets(ev, at_once=0)


def test_the_factory_carries_at_once_to_the_workers_evaluator(subnets):
    import pickle

    from nas.executors.supernet import SupernetAccuracyFactory

    ev, genomes = subnets
    factory = SupernetAccuracyFactory.from_subnets(ev, at_once=2)
    assert factory.build().at_once == 2
    remote = pickle.loads(pickle.dumps(factory)).build()  # as a Ray worker rebuilds it from the tensors
    assert remote.at_once == 2 and remote.subnets is not ev
    assert [m["accuracy"] for m in remote.evaluate(genomes[:3])] == [ev.measure(g)["accuracy"] for g in genomes[:3]]
