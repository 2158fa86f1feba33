"""Hyperparameter search: scheduler overhead, and random vs ASHA vs TPE on Adult with peers.

Part 1 -- scheduler overhead. ``N`` trials that each sleep ``S`` seconds on 2 workers of the
``local`` engine (``shardlearn.search.search(objective=...)``, random strategy: one task graph);
the ideal wall time is ``N * S / 2``; overhead = wall / ideal - 1. Optuna's own
``study.optimize(n_jobs=2)`` runs the same sleeps as a peer. Default N=200, S=1 s.

Part 2 -- XGBoost on Adult (``../shared/datasets/adult/adult.data``, ingested once into 8
stratified shards, split 80/10/10). The same space for everyone: ``max_depth`` in [3, 10],
``learning_rate`` log-uniform [0.01, 0.3], ``min_child_weight`` log-uniform [0.5, 10],
``subsample`` uniform [0.6, 1]; full budget ``ROUNDS`` boosting rounds; scored by ROC-AUC on
the valid split (shardlearn: evaluate(), peers: sklearn's roc_auc_score on the same rows). The
test AUC is that of each system's final model, computed after its clock stops for the peers:
shardlearn's refit on train + valid, Optuna's best booster (or its refit), HalvingRandomSearchCV's
``best_estimator_`` (refitted on train).

* shardlearn ``search`` with random, ASHA (budget = boosting rounds, eta 3, 3 rungs; 3x the
  configurations for the same rung-0 cost) and TPE, on the ``local`` engine with 2 workers
  (each trial trains in one process; 2 trials at a time), including the refit on train+valid
  and its test scores. Each search is timed from creating its engine to closing it: starting
  any worker or task process counts (nothing is started before the clock);
* Optuna alone: TPE in one process, ``xgboost.train`` with ``nthread=2`` on the one-hot-encoded
  frame (pandas ``get_dummies``), same number of trials;
* Optuna TPE + refit: the same run, its clock read again after the best configuration has been
  trained on train + valid (frames stacked, a new ``DMatrix``, ``nthread=2``, the same rounds):
  what an Optuna user does to get a model comparable to shardlearn's refitted one, which
  scikit-learn's ``refit=True`` also does and Optuna alone does not;
* scikit-learn ``HalvingRandomSearchCV`` over ``xgboost.XGBClassifier`` (resource =
  ``n_estimators``, factor 3, ``n_jobs=2``, 3-fold CV on the train split), best estimator
  scored on the valid split. It draws the same 18 configurations as shardlearn's ASHA
  (``ParameterSampler`` with the same seed).

The ratios compare like with like: shardlearn's whole search (refit included) against Optuna
+ refit, and shardlearn's trials alone (``refit=False``) against Optuna alone.

The ``best`` column names the chosen configuration (max_depth / learning_rate), so two systems
that chose the same one can be told apart from two that found different optima: XGBoost's row
subsampling makes the valid AUC of one configuration vary with the order of the training rows
(about +-0.001 on Adult), and shardlearn trains on its shards' rows, the peers on
``to_pandas``'s.

Usage: ``python benchmarks/search.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
ADULT = ROOT.parents[1] / "shared" / "datasets" / "adult" / "adult.data"
CACHE = ROOT / "_data"
LOW_DEPTH, HIGH_DEPTH = 3, 10


# Workers import the objective by module name: make benchmarks/ importable for them too.
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
from _search_objectives import sleep_objective  # noqa: E402


# ------------------------------------------------------------------ part 1: overhead
def overhead(trials: int, seconds: float) -> list[dict[str, Any]]:
    from shardlearn.engine import engine
    from shardlearn.search import search, uniform

    ideal = trials * seconds / 2
    rows = []
    with engine("local", workers=2) as eng:
        # Workers up and search modules imported before timing, as in a running cluster.
        search(objective=sleep_objective, space={"x": uniform(0, 1), "seconds": 0.0},
               strategy="random", trials=4, engine=eng)  # fmt: skip
        start = time.perf_counter()
        search(objective=sleep_objective, space={"x": uniform(0, 1), "seconds": seconds},
               strategy="random", trials=trials, engine=eng)  # fmt: skip
        wall = time.perf_counter() - start
    rows.append({"system": "shardlearn search (local, 2 workers)", "wall": wall, "ideal": ideal})
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    start = time.perf_counter()
    study.optimize(lambda t: (time.sleep(seconds), t.suggest_float("x", 0, 1))[1],
                   n_trials=trials, n_jobs=2)  # fmt: skip
    rows.append({"system": "Optuna study.optimize(n_jobs=2)", "wall": time.perf_counter() - start,
                 "ideal": ideal})  # fmt: skip
    for row in rows:
        row["overhead_pct"] = 100 * (row["wall"] / row["ideal"] - 1)
    return rows


# ------------------------------------------------------------------ part 2: Adult
def adult_dataset() -> Any:
    from shardlearn.data import Dataset, ingest

    out = CACHE / "adult-search-ds"
    if (out / "manifest.json").exists():
        return Dataset.open(out)
    return ingest(ADULT, label="Y", out=out, partitions=8, strategy="stratified",
                  split=(0.8, 0.1, 0.1), seed=0, overwrite=True)  # fmt: skip


def shardlearn_runs(ds: Any, trials: int, rounds: int) -> list[dict[str, Any]]:
    from shardlearn.engine import engine
    from shardlearn.search import loguniform, randint, search, uniform

    space = {"max_depth": randint(LOW_DEPTH, HIGH_DEPTH + 1),
             "learning_rate": loguniform(0.01, 0.3), "min_child_weight": loguniform(0.5, 10),
             "subsample": uniform(0.6, 1.0), "n_estimators": rounds}  # fmt: skip
    # The searches as a user runs them (refit on train + valid, test scores, the model saved),
    # then random and TPE with refit=False: the trials alone, the work Optuna's clock covers.
    plans = [("random", trials, True), ("asha", 3 * trials, True), ("tpe", trials, True),
             ("random", trials, False), ("tpe", trials, False)]  # fmt: skip
    rows = []
    # The libraries the peers' runs find imported, this process imports before any clock too
    # (a task process that a search starts imports them inside the clock); so it does
    # shardlearn's modules a search imports on first use (preprocessing, the registry that
    # saves the model), which every shardlearn row but the first finds imported: each row is
    # timed in the same state.
    import optuna  # noqa: F401
    import xgboost  # noqa: F401

    import shardlearn.models  # noqa: F401
    import shardlearn.preprocess  # noqa: F401
    import shardlearn.registry  # noqa: F401

    for strategy, n, refit in plans:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            with engine("local", workers=2) as eng:
                result = search(ds, models="xgboost", space=space, strategy=strategy, trials=n,
                                metric="roc_auc", engine=eng, out=out, seed=0,
                                refit=refit)  # fmt: skip
            wall = time.perf_counter() - start
        name = f"shardlearn {strategy}" + ("" if refit else TRIALS_ONLY)
        rows.append({"system": name, "configs": n,
                     "fits": len(result.trials), "wall": wall, "valid_auc": result.best_score,
                     "test_auc": result.test_metrics.get("roc_auc"),
                     "best": _config(result.best_params),
                     # The refit's share of the wall time, and whether it ran beside the
                     # last trials (on a slot they left idle).
                     "refit_s": result.refit_seconds,
                     "refit_early": result.refit_started_early})  # fmt: skip
    return rows


def _config(params: dict[str, Any]) -> str:
    """A configuration in a few characters: max_depth / learning_rate."""
    return f"{int(params['max_depth'])} / {float(params['learning_rate']):.3f}"


def _frames(ds: Any) -> tuple:
    import pandas as pd

    frames = {s: ds.to_pandas(s) for s in ("train", "valid", "test")}
    both = pd.get_dummies(pd.concat(frames.values(), keys=list(frames)).drop(columns="Y"))
    X = {s: both.loc[s].to_numpy(np.float32) for s in frames}
    y = {s: (frames[s]["Y"].astype(str).str.strip() == ">50K").to_numpy(np.int64) for s in frames}
    return X, y


def _booster_params(params: dict[str, Any]) -> dict[str, Any]:
    """XGBoost's parameters for a configuration of the search space (2 threads)."""
    return {"objective": "binary:logistic", "tree_method": "hist", "nthread": 2,
            "max_depth": params["max_depth"], "eta": params["learning_rate"],
            "min_child_weight": params["min_child_weight"],
            "subsample": params["subsample"]}  # fmt: skip


def optuna_runs(ds: Any, trials: int, rounds: int) -> list[dict[str, Any]]:
    """Optuna alone, and the same run followed by what an Optuna user does to get a model
    comparable to shardlearn's refit: the best configuration trained again on train + valid.

    One run, two clock readings: when ``study.optimize`` returns, and when the refit has
    trained (stacking the frames and building its matrix count). Test AUCs after the clock.
    """
    import optuna
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    X, y = _frames(ds)
    start = time.perf_counter()
    train, valid = xgb.DMatrix(X["train"], y["train"]), xgb.DMatrix(X["valid"])

    boosters: dict[int, Any] = {}  # kept to score the best one on test after the clock

    def objective(trial: Any) -> float:
        params = {"max_depth": trial.suggest_int("max_depth", LOW_DEPTH, HIGH_DEPTH),
                  "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                  "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 10, log=True),
                  "subsample": trial.suggest_float("subsample", 0.6, 1.0)}  # fmt: skip
        booster = xgb.train(_booster_params(params), train, num_boost_round=rounds)
        boosters[trial.number] = booster
        return float(roc_auc_score(y["valid"], booster.predict(valid)))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    alone = time.perf_counter() - start
    both = xgb.DMatrix(np.concatenate([X["train"], X["valid"]]),
                       np.concatenate([y["train"], y["valid"]]))  # fmt: skip
    refit = xgb.train(_booster_params(study.best_params), both, num_boost_round=rounds)
    with_refit = time.perf_counter() - start
    test = xgb.DMatrix(X["test"])
    common = {"configs": trials, "valid_auc": study.best_value,
              "best": _config(study.best_params)}  # fmt: skip
    best = boosters[study.best_trial.number].predict(test)
    return [
        {"system": OPTUNA, **common, "fits": trials, "wall": alone,
         "test_auc": float(roc_auc_score(y["test"], best))},
        {"system": OPTUNA_REFIT, **common, "fits": trials + 1, "wall": with_refit,
         "test_auc": float(roc_auc_score(y["test"], refit.predict(test)))},
    ]  # fmt: skip


def halving_sklearn(ds: Any, trials: int, rounds: int) -> dict[str, Any]:
    from scipy import stats
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import HalvingRandomSearchCV
    from xgboost import XGBClassifier

    X, y = _frames(ds)
    space = {"max_depth": stats.randint(LOW_DEPTH, HIGH_DEPTH + 1),
             "learning_rate": stats.loguniform(0.01, 0.3),
             "min_child_weight": stats.loguniform(0.5, 10),
             "subsample": stats.uniform(0.6, 0.4)}  # fmt: skip
    start = time.perf_counter()
    search = HalvingRandomSearchCV(
        XGBClassifier(tree_method="hist", n_jobs=1), space, n_candidates=3 * trials,
        resource="n_estimators", max_resources=rounds, min_resources=max(1, rounds // 9),
        factor=3, cv=3, scoring="roc_auc", n_jobs=2, random_state=0,
    ).fit(X["train"], y["train"])  # fmt: skip
    auc = roc_auc_score(y["valid"], search.best_estimator_.predict_proba(X["valid"])[:, 1])
    wall = time.perf_counter() - start
    test = roc_auc_score(y["test"], search.best_estimator_.predict_proba(X["test"])[:, 1])
    return {"system": "sklearn HalvingRandomSearchCV (n_jobs=2, cv=3)", "configs": 3 * trials,
            "fits": int(sum(search.n_candidates_)) * 3, "wall": wall, "valid_auc": float(auc),
            "test_auc": float(test), "best": _config(search.best_params_)}  # fmt: skip


# ------------------------------------------------------------------ report
OPTUNA = "Optuna TPE alone (1 process, nthread=2)"
OPTUNA_REFIT = "Optuna TPE + refit of the best on train+valid (nthread=2)"
TRIALS_ONLY = ", refit=False (trials only)"


def ratios(part2: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """shardlearn's wall time over its peer's: the whole search (refit included) against
    Optuna + refit, the trials alone against Optuna alone."""
    wall = {row["system"]: row["wall"] for row in part2}
    out = []
    for strategy in ("random", "tpe"):
        for ours, peer in ((f"shardlearn {strategy}", OPTUNA_REFIT),
                           (f"shardlearn {strategy}{TRIALS_ONLY}", OPTUNA)):  # fmt: skip
            if ours in wall and peer in wall:
                out.append({"system": ours, "peer": peer, "ratio": wall[ours] / wall[peer]})
    return out


def markdown(part1: list[dict], part2: list[dict], settings: dict[str, Any]) -> str:
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; {settings}", "",
             "| scheduler (trials of synthetic sleep) | wall s | ideal s | overhead |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for row in part1:
        lines.append(f"| {row['system']} | {row['wall']:.1f} | {row['ideal']:.1f} | "
                     f"{row['overhead_pct']:.1f}% |")  # fmt: skip
    lines += ["", "| XGBoost on Adult | configs | fits | wall s | best valid AUC | test AUC "
              "| best |", "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for row in part2:
        test = "" if row["test_auc"] is None else f"{row['test_auc']:.4f}"
        lines.append(f"| {row['system']} | {row['configs']} | {row['fits']} | "
                     f"{row['wall']:.2f} | {row['valid_auc']:.4f} | {test} | "
                     f"{row['best']} |")  # fmt: skip
    lines += ["", "| shardlearn | peer | wall time ratio |", "|---|---|---:|"]
    for row in ratios(part2):
        lines.append(f"| {row['system']} | {row['peer']} | {row['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 x 0.5 s sleeps, 6 configs.")
    parser.add_argument("--sleep-trials", type=int, default=None)
    parser.add_argument("--configs", type=int, default=None, help="Configurations per run.")
    parser.add_argument("--rounds", type=int, default=None, help="Full boosting rounds.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sleeps = args.sleep_trials or (40 if args.quick else 200)
    seconds = 0.5 if args.quick else 1.0
    configs = args.configs or (6 if args.quick else 20)
    rounds = args.rounds or (50 if args.quick else 150)
    settings = {"sleep_trials": sleeps, "sleep_s": seconds, "configs": configs, "rounds": rounds}
    part1 = overhead(sleeps, seconds)
    ds = adult_dataset()
    part2 = shardlearn_runs(ds, configs, rounds)
    part2 += optuna_runs(ds, configs, rounds)
    part2.append(halving_sklearn(ds, configs, rounds))
    print(markdown(part1, part2, settings))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "overhead": part1,
                                         "adult": part2, "ratios": ratios(part2)},
                                        indent=2))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
