"""Search strategies: which trials to run next, given the results so far.

Every strategy answers two calls: ``next_wave(slots)`` returns the trial specs to schedule now
(each with a ``priority``; an empty list ends the search) and ``tell(results)`` receives their
results. The driver (:mod:`shardlearn.search._search`) runs each wave as one
:class:`~shardlearn.engine.TaskGraph`, so trials run concurrently as far as the engine's
resources allow.

- ``grid`` and ``random``: every candidate is known up front; they form one wave (or waves of
  ``slots`` when the driver needs to stop on a time budget or show progress).
- ``halving``: synchronous successive halving -- rung ``k`` runs the best ``1/eta`` of rung
  ``k-1`` with ``eta`` times the budget.
- ``asha``: asynchronous successive halving in waves of ``slots`` trials: each wave first
  promotes any configuration in the top ``1/eta`` of its rung (higher rungs first, with a
  higher task priority), and fills the remaining slots with new configurations at the lowest
  budget. Promotions depend only on finished results, never on a barrier over a whole rung.
- ``tpe``: Optuna's TPE sampler through its ask-and-tell interface, ``slots`` trials per wave.

Budgets are fractions of the full budget: ``eta**-(rungs-1), ..., 1/eta, 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from shardlearn._validation import unknown_name_message
from shardlearn.exceptions import SpecError
from shardlearn.search.space import Distribution, ModelSpace, interleave, plain

__all__ = ["STRATEGIES", "make_strategy"]

STRATEGIES = ("grid", "random", "halving", "asha", "tpe")


def _spec(trial: int, model: str, params: dict[str, Any], rung: int = 0, budget: Any = None):
    return {"trial": f"t{trial:04d}", "rung": rung, "model": model, "params": params,
            "budget": budget}  # fmt: skip


class _Fixed:
    """Grid and random search: a fixed list of candidates."""

    def __init__(self, candidates: list[tuple[str, dict[str, Any]]]) -> None:
        self.pending = [_spec(i, m, p) for i, (m, p) in enumerate(candidates)]

    def next_wave(self, slots: int | None) -> list[dict[str, Any]]:
        take = len(self.pending) if slots is None else slots
        wave, self.pending = self.pending[:take], self.pending[take:]
        return [{**s, "priority": 0} for s in wave]

    def tell(self, results: list[dict[str, Any]]) -> None:
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
        self.rung = 0  # synchronous halving: the rung being run
        self.queue: list[dict[str, Any]] = []

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

    def next_wave(self, slots: int | None) -> list[dict[str, Any]]:
        if self.asynchronous:
            return self._asha_wave(slots or 1)
        if self.rung == 0 and self.next_new == 0:
            self.next_new = len(self.candidates)
            return [{**self._new(i), "priority": 0} for i in range(len(self.candidates))]
        if self.rung + 1 >= self.rungs:
            return []
        wave = [self._promote(r) for r in self._promotable(self.rung)]
        self.rung += 1
        return wave

    def _asha_wave(self, slots: int) -> list[dict[str, Any]]:
        wave: list[dict[str, Any]] = []
        for rung in reversed(range(self.rungs - 1)):
            for result in self._promotable(rung):
                if len(wave) < slots:
                    wave.append(self._promote(result))
        while len(wave) < slots and self.next_new < len(self.candidates):
            wave.append({**self._new(self.next_new), "priority": 0})
            self.next_new += 1
        return wave

    def tell(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            self.results[result["rung"]].append(result)


def _suggest(trial: Any, label: str, dist: Distribution) -> Any:
    if dist.kind == "loguniform":
        return trial.suggest_float(label, *dist.args, log=True)
    if dist.kind == "uniform":
        return trial.suggest_float(label, *dist.args)
    if dist.kind == "randint":
        return trial.suggest_int(label, dist.args[0], dist.args[1] - 1)
    return trial.suggest_categorical(label, list(dist.args[0]))


class _TPE:
    """Optuna's TPE sampler, asked for ``slots`` trials at a time."""

    def __init__(self, spaces: list[ModelSpace], n: int, seed: int, score_key) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.spaces, self.n, self.key = {s.model: s for s in spaces}, n, score_key
        self.asked = 0
        self.open: dict[str, Any] = {}

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

    def next_wave(self, slots: int | None) -> list[dict[str, Any]]:
        wave = []
        while self.asked < self.n and len(wave) < (slots or 1):
            trial = self.study.ask()
            model, params = self._suggest(trial)
            spec = _spec(self.asked, model, params)
            self.open[spec["trial"]] = trial
            wave.append({**spec, "priority": 0})
            self.asked += 1
        return wave

    def tell(self, results: list[dict[str, Any]]) -> None:
        import optuna

        for result in results:
            trial = self.open.pop(result["trial"])
            if result["status"] == "ok":
                self.study.tell(trial, self.key(result))
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)


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
