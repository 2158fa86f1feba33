"""Search strategies: which trial to run next, given the results so far.

Every strategy answers two calls: ``ask()`` returns the next trial spec to start now, or
``None`` when none can start until more results are in (the search ends when nothing runs
and ``ask()`` gives nothing), and ``tell(result)`` receives each finished trial. The driver
(:mod:`shardlearn.search._search`) asks whenever a slot is free, so every slot stays busy;
there are no waves.

- ``grid`` and ``random``: every candidate is known up front, handed out in order.
- ``halving``: synchronous successive halving -- rung ``k+1`` (the best ``1/eta`` of rung
  ``k`` with ``eta`` times the budget) starts once every rung-``k`` trial has finished.
- ``asha``: asynchronous successive halving (Li et al. 2018, "A System for Massively
  Parallel Hyperparameter Tuning", Algorithm 2): a freed slot gets the promotion of a
  configuration in the top ``1/eta`` of its rung's finished results that was not promoted
  yet (the highest rung first), else a new configuration at the lowest budget. A slow trial
  holds its own slot only. As in the paper, which configurations are promoted depends on the
  order in which trials finish, so with several slots two runs may promote differently (with
  one slot the order, and so the result, is fixed by the seed).
- ``tpe``: Optuna's TPE sampler through its ask-and-tell interface. Trial ``i`` is asked
  once trials ``0 .. i - TPE_BATCH`` have finished, and results are told in trial order, so
  the sampler sees the same history on every run whatever the timing or the number of cores:
  a seed gives one leaderboard. The first :data:`TPE_STARTUP` trials are the exception: the
  sampler draws them at random whatever it has been told (Optuna's ``n_startup_trials``:
  fewer completed trials than that), so they are asked at once, without waiting for the
  results they would not use -- the same configurations, with no slot left idle meanwhile.
  From trial :data:`TPE_STARTUP` on, at most :data:`TPE_BATCH` TPE trials run at once.

Budgets are fractions of the full budget: ``eta**-(rungs-1), ..., 1/eta, 1``. A promotion
(``halving``, ``asha``) is the same configuration one rung up; when the budget is the model's
rounds or epochs and the model can continue training, the trial continues the rung below's
fitted model rather than refitting it (:mod:`shardlearn.search._trial`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from shardlearn._validation import unknown_name_message
from shardlearn.exceptions import SpecError
from shardlearn.search.space import Distribution, ModelSpace, interleave, plain

__all__ = ["STRATEGIES", "TPE_BATCH", "TPE_STARTUP", "make_strategy"]

STRATEGIES = ("grid", "random", "halving", "asha", "tpe")

#: TPE trials that may run before the oldest one's result is in (see the module docstring).
TPE_BATCH = 4
#: TPE's random start (Optuna's ``n_startup_trials``, its default): trials drawn at random
#: while fewer trials than this have completed, whatever their results.
TPE_STARTUP = 10


def _spec(trial: int, model: str, params: dict[str, Any], rung: int = 0, budget: Any = None):
    return {"trial": f"t{trial:04d}", "rung": rung, "model": model, "params": params,
            "budget": budget}  # fmt: skip


class _Fixed:
    """Grid and random search: a fixed list of candidates."""

    def __init__(self, candidates: list[tuple[str, dict[str, Any]]]) -> None:
        self.pending = [_spec(i, m, p) for i, (m, p) in enumerate(candidates)]
        self.total = len(self.pending)

    @property
    def exhausted(self) -> bool:
        """Every trial has been asked for: none is to come."""
        return not self.pending

    def ask(self) -> dict[str, Any] | None:
        return {**self.pending.pop(0), "priority": 0} if self.pending else None

    def tell(self, result: dict[str, Any]) -> None:
        pass


def _random_candidates(spaces: list[ModelSpace], n: int, seed: int) -> list[tuple[str, dict]]:
    # Split the trials evenly over the models, each sampled with the same seed as
    # RandomizedSearchCV would be, then interleave so every model is tried early.
    shares = [n // len(spaces) + (i < n % len(spaces)) for i in range(len(spaces))]
    lists = [[(s.model, p) for p in s.sample(k, seed)] for s, k in zip(spaces, shares, strict=True)]
    return interleave(lists)


class _Halving:
    """Successive halving over rungs; ``asynchronous`` switches to ASHA's promotion rule."""

    def __init__(self, candidates, eta: int, rungs: int, asynchronous: bool, score_key):
        self.candidates = candidates
        self.eta, self.rungs, self.asynchronous, self.key = eta, rungs, asynchronous, score_key
        self.budgets = [eta ** (k - rungs + 1) for k in range(rungs)]
        self.next_new = 0
        self.results: list[list[dict[str, Any]]] = [[] for _ in range(rungs)]
        self.promoted: list[set[str]] = [set() for _ in range(rungs)]
        # Synchronous halving: the rung being run, its queued and running trials.
        self.rung = 0
        self.queue: list[dict[str, Any]] = []
        self.running = 0
        self.total = None  # unknown up front: promotions depend on the results
        # Promotions depend on results still to come, so a new trial may always follow.
        self.exhausted = False

    def _new(self, index: int) -> dict[str, Any]:
        model, params = self.candidates[index]
        return _spec(index, model, params, 0, self.budgets[0])

    def _promotable(self, rung: int) -> list[dict[str, Any]]:
        done = [r for r in self.results[rung] if r["status"] == "ok"]
        top = sorted(done, key=self.key, reverse=True)[: len(done) // self.eta]
        return [r for r in top if r["trial"] not in self.promoted[rung]]

    def _promote(self, result: dict[str, Any]) -> dict[str, Any]:
        rung = result["rung"] + 1
        self.promoted[rung - 1].add(result["trial"])
        spec = {k: result[k] for k in ("trial", "model", "params")}
        return {**spec, "rung": rung, "budget": self.budgets[rung], "priority": rung}

    def ask(self) -> dict[str, Any] | None:
        if self.asynchronous:
            return self._asha_job()
        if not self.queue and self.running == 0:
            self._next_rung()
        if not self.queue:
            return None
        self.running += 1
        return self.queue.pop(0)

    def _next_rung(self) -> None:
        """Queue rung 0 (every candidate), or the promotions out of the finished rung."""
        if self.next_new == 0:
            self.next_new = len(self.candidates)
            self.queue = [{**self._new(i), "priority": 0} for i in range(len(self.candidates))]
        elif self.rung + 1 < self.rungs:
            self.queue = [self._promote(r) for r in self._promotable(self.rung)]
            self.rung += 1

    def _asha_job(self) -> dict[str, Any] | None:
        for rung in reversed(range(self.rungs - 1)):
            promotable = self._promotable(rung)
            if promotable:
                return self._promote(promotable[0])
        if self.next_new < len(self.candidates):
            self.next_new += 1
            return {**self._new(self.next_new - 1), "priority": 0}
        return None

    def tell(self, result: dict[str, Any]) -> None:
        self.results[result["rung"]].append(result)
        if not self.asynchronous:
            self.running -= 1


def _suggest(trial: Any, label: str, dist: Distribution) -> Any:
    if dist.kind == "loguniform":
        return trial.suggest_float(label, *dist.args, log=True)
    if dist.kind == "uniform":
        return trial.suggest_float(label, *dist.args)
    if dist.kind == "randint":
        return trial.suggest_int(label, dist.args[0], dist.args[1] - 1)
    return trial.suggest_categorical(label, list(dist.args[0]))


class _TPE:
    """Optuna's TPE sampler; trial ``i`` sees the results of trials ``0 .. i - TPE_BATCH``
    (those below :data:`TPE_STARTUP` are drawn at random, and asked without waiting)."""

    def __init__(self, spaces: list[ModelSpace], n: int, seed: int, score_key) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.spaces, self.n, self.key = {s.model: s for s in spaces}, n, score_key
        self.asked = self.told = 0
        self.total = n
        self.open: dict[str, Any] = {}
        self.finished: dict[str, dict[str, Any]] = {}

    @property
    def exhausted(self) -> bool:
        """Every trial has been asked for: none is to come."""
        return self.asked >= self.n

    def _suggest(self, trial: Any) -> tuple[str, dict[str, Any]]:
        models = list(self.spaces)
        model = trial.suggest_categorical("model", models) if len(models) > 1 else models[0]
        params = {}
        for name, value in self.spaces[model].params.items():
            label = f"{model}:{name}" if model else name
            if isinstance(value, Distribution):
                params[name] = _suggest(trial, label, value)
            elif isinstance(value, list):
                params[name] = trial.suggest_categorical(label, value)
            else:
                params[name] = value
        return model, plain(params)

    def ask(self) -> dict[str, Any] | None:
        if self.asked >= self.n:
            return None
        self._tell_upto(self.asked - TPE_BATCH)
        if self.asked >= TPE_STARTUP and self.told <= self.asked - TPE_BATCH:
            return None  # the history this trial must see is not complete yet
        trial = self.study.ask()
        model, params = self._suggest(trial)
        spec = _spec(self.asked, model, params)
        self.open[spec["trial"]] = trial
        self.asked += 1
        return {**spec, "priority": 0}

    def tell(self, result: dict[str, Any]) -> None:
        self.finished[result["trial"]] = result
        if self.asked >= self.n:
            self._tell_upto(self.n - 1)

    def _tell_upto(self, last: int) -> None:
        """Tell the study trials ``told .. last`` in trial order, as far as they have finished."""
        import optuna

        while self.told <= last:
            result = self.finished.pop(_spec(self.told, "", {})["trial"], None)
            if result is None:
                return
            trial = self.open.pop(result["trial"])
            if result["status"] == "ok":
                self.study.tell(trial, self.key(result))
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.told += 1


def make_strategy(
    name: str,
    spaces: list[ModelSpace],
    trials: int | None,
    seed: int,
    score_key: Callable[[dict[str, Any]], float],
    eta: int = 3,
    rungs: int = 3,
) -> Any:
    """Build strategy ``name`` (one of :data:`STRATEGIES`) over ``spaces``."""
    if name not in STRATEGIES:
        raise SpecError(unknown_name_message("search strategy", name, STRATEGIES))
    if name == "grid":
        return _Fixed(interleave([[(s.model, p) for p in s.grid()] for s in spaces]))
    if trials is None or isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SpecError(f"The {name!r} strategy needs trials >= 1. Got {trials!r}.")
    if name == "tpe":
        return _TPE(spaces, trials, seed, score_key)
    candidates = _random_candidates(spaces, trials, seed)
    if name == "random":
        return _Fixed(candidates)
    if not isinstance(eta, int) or eta < 2 or not isinstance(rungs, int) or rungs < 2:
        raise SpecError(f"Successive halving needs eta >= 2 and rungs >= 2. Got {eta}, {rungs}.")
    if math.ceil(len(candidates) / eta ** (rungs - 1)) < 1:
        raise SpecError("Too few trials for the number of rungs.")
    return _Halving(candidates, eta, rungs, name == "asha", score_key)
