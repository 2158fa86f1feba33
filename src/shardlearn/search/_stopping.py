"""Early stopping inside a search: which parameters switch it, and the round it kept.

A trial whose estimator stops early (XGBoost's ``early_stopping_rounds``, the neural models'
``early_stopping``) trains with an inner valid split carved from the fold's training shards
(:func:`shardlearn.search.cv.trainer_view`), never with the rows it is scored on. Each fold's
fitted model says how many rounds or epochs it kept; the trial selects their median, and the
refit on all training data trains exactly that many with early stopping switched off (it has
no valid split to watch). This module holds the per-model knowledge that needs: a small rule
per kind of estimator rather than ``if`` chains in the trial code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StoppingRule", "kept_rounds", "selected_rounds", "stopping_rule"]


@dataclass(frozen=True)
class StoppingRule:
    """How one kind of estimator stops early.

    Attributes
    ----------
    switch : str
        The parameter that turns early stopping on.
    off : Any
        The value of ``switch`` that turns it off.
    budget : str
        The parameter counting rounds or epochs (set to the selected value for the refit).
    """

    switch: str
    off: Any
    budget: str

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-able fields of a trial result."""
        return {"switch": self.switch, "off": self.off, "param": self.budget}


_BOOSTING = StoppingRule("early_stopping_rounds", None, "n_estimators")
_NEURAL = StoppingRule("early_stopping", False, "epochs")


def stopping_rule(estimator: Any) -> StoppingRule | None:
    """The estimator's early-stopping rule if early stopping is on, else ``None``."""
    params = estimator.get_params(deep=False)
    if params.get("early_stopping_rounds") is not None and "n_estimators" in params:
        return _BOOSTING
    if params.get("early_stopping") is True and "epochs" in params:
        return _NEURAL
    return None


def kept_rounds(estimator: Any, rule: StoppingRule) -> tuple[int, str]:
    """The rounds (or epochs) of the fitted model that early stopping kept, and its source.

    The source names the fitted attribute the count was read from, so a trial result shows
    whether it is exact. Boosting reads ``best_iteration_`` (0-based, so + 1). A neural model
    reads ``best_epoch_`` (a count: the epochs behind the kept weights). A model without
    ``best_epoch_`` (fitted by an older shardlearn) gives it through ``n_iter_``: a fit that
    stopped early stopped ``n_iter_no_change`` epochs after its best one, and a fit that ran
    every epoch counts them all (its best epoch is then one of the last ``n_iter_no_change``,
    which ``n_iter_`` cannot tell).
    """
    if rule == _BOOSTING:
        best = getattr(estimator, "best_iteration_", None)
        if best is not None:
            return int(best) + 1, "best_iteration_ + 1"
        return int(estimator.n_estimators_), "n_estimators_"
    best = getattr(estimator, "best_epoch_", None)
    if best is not None:
        return int(best), "best_epoch_"
    epochs, patience, ran = estimator.epochs, estimator.n_iter_no_change, estimator.n_iter_
    if ran < epochs:
        return max(1, ran - patience), "n_iter_ - n_iter_no_change"
    return int(ran), "n_iter_ (ran every epoch)"


def selected_rounds(per_fold: list[int]) -> int:
    """The rounds the refit trains: the median over folds, rounded half up, at least 1."""
    return max(1, int(np.floor(np.median(per_fold) + 0.5)))
