"""Strategies on synthetic objectives: halving/ASHA promotions, TPE vs random, failures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shardlearn.engine import engine
from shardlearn.search import search, uniform
from tests.search._objectives import fails_when_x_is_large, linear_in_x, negative_branin

ETA = 3
RUNGS = 3


def _run(strategy, objective, space, trials, seed=0, eng=None, **kw):
    if eng is not None:
        return search(objective=objective, space=space, strategy=strategy, trials=trials,
                      seed=seed, engine=eng, eta=ETA, rungs=RUNGS, **kw)  # fmt: skip
    with engine("local", workers=1) as local:
        return _run(strategy, objective, space, trials, seed, local, **kw)


def _by_rung(result):
    rungs: list[list[dict]] = [[] for _ in range(RUNGS)]
    for trial in result.trials:
        rungs[trial["rung"]].append(trial)
    return rungs


def test_successive_halving_keeps_the_top_third_per_rung():
    result = _run("halving", linear_in_x, {"x": uniform(0, 1)}, trials=27)
    rungs = _by_rung(result)
    assert [len(r) for r in rungs] == [27, 9, 3]
    for lower, upper in zip(rungs, rungs[1:], strict=False):
        best = sorted(lower, key=lambda t: t["score"], reverse=True)[: len(lower) // ETA]
        assert {t["trial"] for t in upper} == {t["trial"] for t in best}
    assert [t["budget"] for t in rungs[2]] == [1.0] * 3
    xs = [t["params"]["x"] for t in rungs[0]]
    assert result.best_params["x"] == max(xs)


def _waves(result, out):
    """The trial results of each wave, in the order the search ran them (from ``log.jsonl``)."""
    by_key = {f"{t['trial']}-r{t['rung']}": t for t in result.trials}
    lines = (out / "log.jsonl").read_text().splitlines()
    return [[by_key[key] for key in json.loads(line)["started"]] for line in lines]


def _top(results):
    ranked = sorted(results, key=lambda t: t["score"], reverse=True)
    return {t["trial"] for t in ranked[: len(ranked) // ETA]}


def test_asha_promotes_exactly_the_unpromoted_top_of_what_has_finished(tmp_path):
    result = _run("asha", linear_in_x, {"x": uniform(0, 1)}, trials=27, out=tmp_path / "out")
    finished: list[list[dict]] = [[] for _ in range(RUNGS)]
    promoted: list[set[str]] = [set() for _ in range(RUNGS)]
    waves = _waves(result, tmp_path / "out")
    assert sum(map(len, waves)) == len(result.trials)
    # Replay the waves: a promotion to rung k+1 is a configuration in the top 1/eta of the
    # rung-k results finished before its wave, not promoted already; and a wave that starts a
    # new configuration has promoted every such configuration first.
    for wave in waves:
        starts_new = any(t["rung"] == 0 for t in wave)
        for rung in range(1, RUNGS):
            eligible = _top(finished[rung - 1]) - promoted[rung - 1]
            into = [t["trial"] for t in wave if t["rung"] == rung]
            assert len(set(into)) == len(into) and set(into) <= eligible
            if starts_new:
                assert set(into) == eligible
            promoted[rung - 1].update(into)
        for trial in wave:
            finished[trial["rung"]].append(trial)
    xs = [t["params"]["x"] for t in finished[0]]
    assert len(xs) == 27
    # The best configuration climbs to the full budget and wins.
    assert result.leaderboard[0]["rung"] == RUNGS - 1
    assert result.best_params["x"] == max(xs)
    assert 0 < len(finished[2]) < len(finished[1]) < 27


def test_tpe_beats_random_search_on_branin_on_average():
    space = {"x": uniform(-5, 10), "y": uniform(0, 15)}
    best = {"tpe": [], "random": []}
    for seed in range(4):
        for strategy in best:
            result = _run(strategy, negative_branin, space, trials=40, seed=seed)
            best[strategy].append(result.best_score)
    assert np.mean(best["tpe"]) > np.mean(best["random"])


def test_a_failing_trial_is_recorded_and_the_search_finishes(any_engine):
    result = _run("random", fails_when_x_is_large, {"x": uniform(0, 1)}, trials=8,
                  eng=any_engine)  # fmt: skip
    failed = [row for row in result.leaderboard if row["status"] == "error"]
    ok = [row for row in result.leaderboard if row["status"] == "ok"]
    assert len(failed) + len(ok) == 8 and failed and ok
    assert all("RuntimeError: x=" in row["error"] for row in failed)
    assert all(row["params"]["x"] > 0.5 for row in failed)
    assert result.leaderboard[: len(ok)] == ok  # failures rank last
    assert result.best_params["x"] == max(row["params"]["x"] for row in ok)


def test_grid_search_on_both_engines_runs_every_point(any_engine, tmp_path):
    result = _run("grid", linear_in_x, {"x": [0.1, 0.4, 0.2, 0.3]}, trials=None,
                  eng=any_engine, out=tmp_path / "out")  # fmt: skip
    assert [row["params"]["x"] for row in result.leaderboard] == [0.4, 0.3, 0.2, 0.1]
    assert (tmp_path / "out" / "leaderboard.parquet").is_file()
    again = _run("grid", linear_in_x, {"x": [0.1, 0.4, 0.2, 0.3]}, trials=None,
                 eng=any_engine, out=tmp_path / "out")  # fmt: skip
    assert again.leaderboard == result.leaderboard


@pytest.mark.parametrize("strategy", ["random", "halving", "asha", "tpe"])
def test_strategies_are_reproducible_with_a_seed(strategy):
    first = _run(strategy, linear_in_x, {"x": uniform(0, 1)}, trials=9, seed=3)
    second = _run(strategy, linear_in_x, {"x": uniform(0, 1)}, trials=9, seed=3)
    other = _run(strategy, linear_in_x, {"x": uniform(0, 1)}, trials=9, seed=4)

    def without_times(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_times(first.leaderboard) == without_times(second.leaderboard)
    # ... and the seed is what decides: another seed draws other configurations.
    assert not {r["params"]["x"] for r in first.leaderboard} & {
        r["params"]["x"] for r in other.leaderboard
    }


def test_time_budget_stops_starting_new_trials():
    # With one CPU there is one slot; a budget that is over at once leaves only the first
    # trial (the first slots always run, so there is a result).
    result = _run("random", linear_in_x, {"x": uniform(0, 1)}, trials=20, time_budget=1e-9)
    assert len(result.trials) == 1
    assert result.best_params is not None


def _tpe_trials(tell_early: bool, n: int = 13) -> list[dict]:
    """A TPE strategy's trials, told in trial order with made-up scores: each result as soon
    as its trial is asked (``tell_early``), or only when the strategy has nothing to start."""
    from shardlearn.search.space import ModelSpace
    from shardlearn.search.strategies import make_strategy

    space = ModelSpace("", {"x": uniform(0, 1), "y": uniform(0, 1)})
    strategy = make_strategy("tpe", [space], n, 0, lambda result: result["score"])
    asked, told = [], 0

    def tell_next():
        nonlocal told
        spec = asked[told]
        strategy.tell({**spec, "status": "ok", "score": spec["params"]["x"] - spec["params"]["y"]})
        told += 1

    while len(asked) < n:
        spec = strategy.ask()
        if spec is None:
            assert told < len(asked), "the strategy waits for a result it was already given"
            tell_next()
            continue
        asked.append(spec)
        if tell_early:
            tell_next()
    return asked


def test_tpe_asks_its_random_start_without_waiting_for_results():
    from shardlearn.search.strategies import TPE_STARTUP

    waiting = _tpe_trials(tell_early=False)
    told = _tpe_trials(tell_early=True)
    # The same configurations whether or not the results were in: the first TPE_STARTUP are
    # random draws, and the later ones saw the same history (trials 0 .. i - TPE_BATCH).
    assert [t["params"] for t in waiting] == [t["params"] for t in told]
    assert len({t["params"]["x"] for t in told}) == len(told)

    from shardlearn.search.space import ModelSpace
    from shardlearn.search.strategies import make_strategy

    strategy = make_strategy("tpe", [ModelSpace("", {"x": uniform(0, 1)})], 12, 0, None)
    started = [strategy.ask() for _ in range(TPE_STARTUP)]
    assert None not in started  # no result in yet, and no slot left idle
    # Trial TPE_STARTUP is TPE's first guided one: it waits for trials 0 .. TPE_STARTUP - 4.
    assert strategy.ask() is None
