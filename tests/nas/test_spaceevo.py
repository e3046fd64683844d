"""SpaceEvo: Q-T score (hand-checked, vectorised == loops), lookup-table checks, aging evolution, qt-score CLI."""

import json

import numpy as np
import pytest
import yaml

from nas.cli import main
from nas.spaceevo import EvolutionSettings, LutEntry, QtLut, QtSettings, aging_evolution, qt_score
from nas.spaceevo.qt_score import score_draws, score_draws_loop
from nas.qt_cli import load_space_search_config
from nas.spaceevo.run import SpaceSearchConfig, run_space_search
from nas.spaceevo.trials import candidate_genome, genome_candidate
from search_spaces.genome import Genome
from search_spaces import InputError
from search_spaces.meta import all_combos, parse_candidate, uniform_candidates


def tiny_lut(rows: int = 6, drop=()) -> QtLut:
    """A hand-made table for the ``tiny`` macro: bigger blocks and windows -> lower NSR, higher latency."""
    rng = np.random.default_rng(0)
    entries = {}
    for combo in all_combos("tiny"):
        if combo in drop:
            continue
        stage, block, window = combo
        size = rng.uniform(0.5, 1.5, rows) * (1 + window)
        entries[combo] = LutEntry(combo, tuple(f"r{i}" for i in range(rows)), 1.0 / (size + 0.1 * block),
                                  0.1 * size * (1 + 0.3 * block), np.full(rows, 1000.0), np.full(rows, 100.0))
    return QtLut("tiny", "onnxruntime-int8", "test CPU", 0.05, entries)


def one_row_lut() -> QtLut:
    """Every entry has one row: NSR = 0.1 + stage, latency = 0.2 (+ 0.1 for block 2)."""
    entries = {c: LutEntry(c, ("only",), np.array([0.1 + c[0]]), np.array([0.2 + 0.1 * (c[1] == 2)]),
                           np.array([1.0]), np.array([1.0])) for c in all_combos("tiny")}
    return QtLut("tiny", "onnxruntime-int8", "test CPU", 0.1, entries)


def test_score_draws_against_hand_computation():
    loss = np.array([4.0, 1.0, 3.0, 2.0] + [5.0] * 16)  # 20 subnets
    lat = np.array([1.0, 3.0, 1.0, 2.0] + [9.0] * 16)
    settings = QtSettings(constraints_ms=(0.5, 1.5, 2.5, 10.0), top_k=2, t=0.1, a=0.01)
    scores, p, l_top = score_draws(loss, lat, settings)
    # T=0.5: nothing feasible -> 0.  T=1.5: {4, 3}, p = 2/20, L_top = 3.5, penalty = (0.1/0.10001)^0.01 < 1 -> 1
    # T=2.5: {4, 3, 2}, L_top = 2.5.  T=10: all, L_top = (1 + 2) / 2 = 1.5
    assert p.tolist() == pytest.approx([0.0, 0.1, 0.15, 1.0])
    assert l_top[1:].tolist() == pytest.approx([3.5, 2.5, 1.5])
    assert scores.tolist() == pytest.approx([0.0, 1 / 3.5, 1 / 2.5, 1 / 1.5])
    rare = QtSettings(constraints_ms=(1.5,), top_k=2, t=0.5, a=0.5)  # p = 0.1 -> penalty sqrt(0.5/0.10001)
    assert score_draws(loss, lat, rare)[0][0] == pytest.approx(1 / (np.sqrt(0.5 / 0.10001) * 3.5))


def test_qt_score_of_a_one_row_table_by_hand():
    lut, cand = one_row_lut(), parse_candidate("tiny-12-00")
    settings = QtSettings(constraints_ms=(0.45, 0.55, 1.0), n_subnets=1000)
    score = qt_score(lut, cand, settings)
    # every subnet: loss 0.1 + 1.1 = 1.2, latency 0.1 + 0.2 + 0.3 = 0.6
    assert score.feasible == (0.0, 0.0, 1.0)
    assert score.per_constraint == pytest.approx((0.0, 0.0, 1 / 1.2))
    assert score.score == pytest.approx(1 / 1.2)


def test_vectorised_equals_loops():
    rng = np.random.default_rng(3)
    loss, lat = rng.uniform(0.5, 3.0, 3000), rng.gamma(2.0, 0.5, 3000)
    settings = QtSettings(constraints_ms=(0.2, 0.5, 1.0, 2.5, 50.0), top_k=50, t=0.1, a=0.3)
    fast, slow = score_draws(loss, lat, settings), score_draws_loop(loss.tolist(), lat.tolist(), settings)
    for a, b in zip(fast, slow):
        assert np.asarray(a) == pytest.approx(np.asarray(b), rel=1e-12)


def test_scoring_is_deterministic_and_ranks_lower_nsr_higher():
    lut, settings = tiny_lut(), QtSettings(constraints_ms=(0.3, 0.6), n_subnets=20000)
    a = qt_score(lut, parse_candidate("tiny-33-11"), settings)
    assert a == qt_score(lut, parse_candidate("tiny-33-11"), settings)
    assert a.score > 0 and all(0 <= p <= 1 for p in a.feasible)


def test_evolution_is_seeded_with_uniform_spaces_and_reproducible():
    lut, qt = tiny_lut(), QtSettings(constraints_ms=(0.3, 0.6), n_subnets=2000)
    settings = EvolutionSettings(population=16, sample=4, total=60, seed=5)
    first, again = aging_evolution(lut, "tiny", qt, settings), aging_evolution(lut, "tiny", qt, settings)
    seeds = [str(c) for c in uniform_candidates("tiny")]
    assert [s.candidate for s in first.history[: len(seeds)]] == seeds
    assert first.history == again.history and len(first.history) == 60
    assert first.best.score == max(s.score for s in first.history)
    other = aging_evolution(lut, "tiny", qt, EvolutionSettings(population=16, sample=4, total=60, seed=6))
    assert [s.candidate for s in other.history] != [s.candidate for s in first.history]


def test_missing_entry_is_reported_not_skipped():
    lut = tiny_lut(drop=[(1, 2, 1)])
    qt = QtSettings(constraints_ms=(0.5,), n_subnets=100)
    with pytest.raises(InputError, match=r"lacks 1 .*\(stage s2, block MBv3\+SE, window 1\)"):
        aging_evolution(lut, "tiny", qt, EvolutionSettings(population=4, sample=2, total=10))
    with pytest.raises(InputError, match=r"space tiny-02-01 needs.*stage s2, block MBv3\+SE, window 1"):
        qt_score(lut, parse_candidate("tiny-02-01"), qt)
    assert qt_score(lut, parse_candidate("tiny-02-00"), qt).score > 0  # entries it does not need may be absent


def test_lut_round_trip_and_validation(tmp_path):
    lut = tiny_lut()
    path = lut.save(tmp_path / "lut.json")
    back = QtLut.load(path)
    assert back.entries.keys() == lut.entries.keys() and back.fixed_ms == lut.fixed_ms
    assert np.allclose(back.entries[(1, 3, 0)].nsr, lut.entries[(1, 3, 0)].nsr)
    data = json.loads(path.read_text())
    data["entries"][3]["rows"][2]["nsr"] = -1.0
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"entries\[3\]\.rows\[2\]\.nsr.*non-negative"):
        QtLut.load(path)
    data["entries"][3]["rows"][2]["nsr"] = 0.5
    data["entries"][3]["window"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"entries\[3\]\.window.*out of range"):
        QtLut.load(path)


def _config(tmp_path, lut_path, **evolution):
    cfg = {"kind": "space-search", "name": "sevo", "seed": 0, "dataset": {"name": "digits"},
           "space_search": {"macro": "tiny", "lut": {"path": str(lut_path)},
                            "qt": {"latency_constraints_ms": [0.3, 0.6], "n_subnets": 2000},
                            "evolution": evolution or {"population": 10, "sample": 3, "total": 30}},
           "output": {"root": str(tmp_path / "runs")}}
    path = tmp_path / "sevo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_qt_score_cli_ranks_spaces(tmp_path, capsys):
    cfg = _config(tmp_path, tiny_lut().save(tmp_path / "lut.json"))
    out = tmp_path / "out"
    assert main(["qt-score", str(cfg), "--spaces", "tiny-00-00", "tiny-33-11", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-33-11" in printed and "Q-T score" in printed
    ranking = json.loads((out / "ranking.json").read_text())["ranking"]
    assert [r["candidate"] for r in ranking] == sorted(["tiny-00-00", "tiny-33-11"],
                                                       key=lambda c: -next(r["score"] for r in ranking
                                                                           if r["candidate"] == c))
    assert (out / "ranking.csv").exists() and (out / "qt_scores.png").stat().st_size > 0
    assert main(["qt-score", str(cfg), "--spaces", "tiny-07-00"]) == 2
    assert "position 7 ('7')" in capsys.readouterr().err


def _journal(run):
    return [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]


def test_run_space_search_journals_every_scored_space_and_writes_the_shared_artifacts(tmp_path):
    cfg = load_space_search_config(_config(tmp_path, tiny_lut().save(tmp_path / "lut.json")))
    result = run_space_search(cfg.config, run_dir=tmp_path / "run", seed=cfg.seed, log=None)
    records = _journal(tmp_path / "run")
    assert len(records) == 30 == result.scored
    assert [r["batch"] for r in records] == [i // 10 for i in range(30)]  # a batch per population of spaces
    assert {r["candidate"] for r in records} == {s.candidate for s in result.ranking}
    for r in records:  # the genome is the space, stage by stage, and reads back as it
        assert str(genome_candidate(Genome.from_dict(r["genome"]))) == r["candidate"]
        assert set(r["metrics"]) == {"qt_score", "qt:0.3ms", "qt:0.6ms", "feasible:0.3ms", "feasible:0.6ms",
                                     "top_loss:0.3ms", "top_loss:0.6ms"}
        assert r["metrics"]["qt_score"] == pytest.approx(r["metrics"]["qt:0.3ms"] + r["metrics"]["qt:0.6ms"])
    search = result.search
    assert len(search.trials) == len(result.ranking) and [h.batch for h in search.history] == [0, 1, 2]
    # the front: exactly the spaces no other beats under both constraints; SpaceEvo's pick is on it
    terms = {t.key: (t.metrics["qt:0.3ms"], t.metrics["qt:0.6ms"]) for t in search.trials}
    dominated = {k for k, a in terms.items() if any(b[0] >= a[0] and b[1] >= a[1] and b != a for b in terms.values())}
    assert {t.key for t in search.front} == set(terms) - dominated
    best = next(t for t in search.trials if t.genome.key == candidate_genome(parse_candidate(result.best.candidate)).key)
    assert best in search.front
    hv = [h.hypervolume for h in search.history]
    assert all(0 < a <= b <= 1.1 ** 2 for a, b in zip(hv, hv[1:]))  # grows with the batches, inside the box
    front = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert front["ranking"][0]["candidate"] == result.best.candidate and len(front["front"]) == len(search.front)
    for name in ("pareto.csv", "pareto.png", "hypervolume.csv", "hypervolume.png", "qt_scores.png", "report.md"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"`{result.best.candidate}`" in report and "| qt:0.3ms | lookup table |" in report


def test_space_search_resume_keeps_the_journal_and_refuses_a_different_one(tmp_path):
    cfg = load_space_search_config(_config(tmp_path, tiny_lut().save(tmp_path / "lut.json")))
    run = tmp_path / "run"
    first = run_space_search(cfg.config, run_dir=run, seed=cfg.seed, log=None)
    lines = (run / "trials.jsonl").read_text().splitlines()
    (run / "trials.jsonl").write_text("\n".join(lines[:12]) + "\n")  # as if stopped after 12 spaces
    again = run_space_search(cfg.config, run_dir=run, seed=cfg.seed, log=None)
    assert (run / "trials.jsonl").read_text().splitlines()[:12] == lines[:12]
    assert [r["candidate"] for r in _journal(run)] == [r["candidate"] for r in map(json.loads, lines)]
    assert again.search.reused == len({json.loads(line)["key"] for line in lines[:12]})
    assert [t.key for t in again.search.front] == [t.key for t in first.search.front]
    with pytest.raises(InputError, match=r"trials.jsonl: line \d+ holds space .* another lookup table or settings"):
        run_space_search(cfg.config, run_dir=run, seed=cfg.seed + 1, log=None)


def test_config_errors_name_the_field(tmp_path):
    lut = tiny_lut().save(tmp_path / "lut.json")
    with pytest.raises(InputError, match=r"space_search\.evolution.*cannot exceed"):
        load_space_search_config(_config(tmp_path, lut, population=4, sample=9, total=10))
    with pytest.raises(InputError, match=r"space_search\.lut\.path.*not found.*nowhere\.json"):
        load_space_search_config(_config(tmp_path, "nowhere.json"))
    with pytest.raises(ValueError):
        SpaceSearchConfig.model_validate({"qt": {"latency_constraints_ms": [1.0]}, "macro": "c11"})
    with pytest.raises(ValueError):
        SpaceSearchConfig.model_validate({"qt": {"latency_constraints_ms": [1.0], "topk": 5}})


def test_qnas_run_space_search_ranks_spaces_in_a_run_folder(tmp_path, capsys):
    tiny_lut().save(tmp_path / "lut.json")
    cfg = _config(tmp_path, "lut.json")  # relative: resolved against the config's folder
    assert main(["validate", str(cfg)]) == 0
    assert "space-search" in capsys.readouterr().out
    assert main(["run", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "Q-T score" in printed and "tiny-" in printed
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(_journal(run)) == 30 and manifest["evaluations"] == len({r["key"] for r in _journal(run)})
    assert main(["pareto", str(run)]) == 0  # the shared front command reads the space search's journal too
    shown = capsys.readouterr().out
    assert f"{manifest['front_size']} of {manifest['evaluations']} candidates" in shown and "qt:0.3ms" in shown


def test_space_search_refuses_sections_it_would_ignore(tmp_path, capsys):
    cfg = _config(tmp_path, tiny_lut().save(tmp_path / "lut.json"))
    data = yaml.safe_load(cfg.read_text())
    data["search_space"] = {"name": "mbv3"}
    cfg.write_text(yaml.safe_dump(data))
    assert main(["validate", str(cfg)]) == 2
    assert "not used by kind: space-search" in capsys.readouterr().err
