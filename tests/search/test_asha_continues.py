"""ASHA promotions continue the rung below's model instead of refitting it from scratch."""

from __future__ import annotations

import json

import pytest

from shardlearn.engine import engine
from shardlearn.registry import load
from shardlearn.search import loguniform, randint, search
from shardlearn.search._trial import run_trial

SPACE = {"max_depth": randint(2, 5), "learning_rate": loguniform(0.05, 0.5), "n_estimators": 27,
         "subsample": 0.8}  # fmt: skip


@pytest.fixture(scope="module")
def asha(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("asha") / "out"
    with engine("local", workers=2) as eng:
        result = search(small_dataset, models="xgboost", space=SPACE, strategy="asha", trials=9,
                        eta=3, rungs=3, cv=2, engine=eng, out=out, refit=False, seed=2,
                        verbose=0)  # fmt: skip
    assert all(t["status"] == "ok" for t in result.trials), result.trials
    return result, out


def test_promoted_boosting_trials_continue_the_same_booster(asha):
    result, out = asha
    promoted = [t for t in result.trials if t["rung"] >= 1]
    assert {t["rung"] for t in promoted} == {1, 2}
    assert all(t["warm_started"] for t in promoted)
    assert all(t["warm_start"].startswith(f"continued {t['trial']}-r{t['rung'] - 1}")
               for t in promoted)  # fmt: skip
    assert not any(t["warm_started"] for t in result.trials if t["rung"] == 0)
    # The search log and the leaderboard say so too.
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    continued = {f"{t['trial']}-r{t['rung']}" for t in promoted}
    assert {entry["trial"] for entry in logged if entry["warm_started"]} == continued
    assert all(row["warm_started"] == (row["rung"] > 0) for row in result.leaderboard)
    trial = next(t for t in promoted if t["rung"] == 1)["trial"]
    for fold in (0, 1):
        first = load(out / "continue" / f"{trial}-r0-f{fold}").booster_.get_dump()
        second = load(out / "continue" / f"{trial}-r1-f{fold}").booster_.get_dump()
        assert (len(first), len(second)) == (3, 9)  # the tree count grows ...
        assert second[:3] == first  # ... and the earlier trees are unchanged


def test_a_continued_trial_scores_what_a_refit_from_scratch_scores(asha, small_dataset):
    # Rounds are seeded by their global number, so continuing 9 rounds to 27 (subsampled)
    # trains the booster a fresh 27-round fit trains: the promotion changes the cost only.
    result, _ = asha
    top = next(t for t in result.trials if t["rung"] == 2)
    spec = {k: top[k] for k in ("trial", "rung", "model", "params", "budget", "budget_value")}
    context = {"dataset": small_dataset.uri, "cv": 2, "metric": "roc_auc", "budget": "auto",
               "seed": 2}  # fmt: skip
    with engine("local", workers=1):
        fresh = run_trial(context, spec)
    assert fresh["warm_started"] is False and fresh["warm_start"].startswith("refit")
    assert fresh["fold_scores"] == top["fold_scores"]


def test_promoted_mlp_trials_continue_their_networks(small_dataset):
    space = {"learning_rate": loguniform(1e-3, 1e-1), "epochs": 9, "early_stopping": False,
             "random_state": 0, "batch_size": 64}  # fmt: skip
    with engine("local", workers=1) as eng:
        result = search(small_dataset, models="mlp", space=space, strategy="asha", trials=3,
                        eta=3, rungs=2, cv=2, engine=eng, refit=False, seed=1,
                        verbose=0)  # fmt: skip
    assert all(t["status"] == "ok" for t in result.trials), result.trials
    promoted = [t for t in result.trials if t["rung"] == 1]
    assert len(promoted) == 1 and promoted[0]["warm_started"]
    # 3 epochs continued to 9 with the same optimiser state: what 9 epochs at once give.
    spec = {k: promoted[0][k] for k in ("trial", "rung", "model", "params", "budget",
                                        "budget_value")}  # fmt: skip
    context = {"dataset": small_dataset.uri, "cv": 2, "metric": "roc_auc", "budget": "auto",
               "seed": 1}  # fmt: skip
    with engine("local", workers=1):
        fresh = run_trial(context, spec)
    assert fresh["warm_started"] is False
    assert fresh["fold_scores"] == pytest.approx(promoted[0]["fold_scores"], abs=1e-9)
