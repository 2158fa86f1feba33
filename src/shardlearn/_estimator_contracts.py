"""What each estimator guarantees, and the data its guarantees are checked on.

:data:`ESTIMATOR_CONTRACTS` is the one table of the estimator conformance suite
(:func:`shardlearn.testing.check_estimator`): per catalogue entry (``shardlearn.models.MODELS``)
the single-process reference it must match, the small parameters that keep a conformance fit
quick, and the tolerances of every distributed guarantee. :func:`contracts_markdown` prints it
for docs/explanation/guarantees.md, so the documented promise and the tested one are the same
numbers.

:class:`ConformanceBench` holds what the checks share: one deterministic data set (a label, a
``key`` feature for ``hash:key`` that mostly follows the label and a ``time`` feature in
label order, so ``range:time`` shards are nearly label-sorted), the same training rows written
once per shard layout, and one engine per worker count. A bare estimator trains on every
numeric column, so ``key`` and ``time`` are features of every fit, the reference's included.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ESTIMATOR_CONTRACTS",
    "LAYOUTS",
    "ConformanceBench",
    "ConformanceData",
    "EstimatorContract",
    "contracts_markdown",
]

#: Shard layouts of the same training rows; "sorted arrays" is ``fit(X, y)`` sorted by label.
LAYOUTS = ("random", "stratified", "hash:key", "range:time", "sorted arrays")
#: Training and test rows, features and classes of the conformance data.
N_TRAIN, N_TEST, N_FEATURES, N_CLASSES = 1200, 400, 8, 3
#: Shards of the random and stratified layouts: more than the 2 workers, so a worker owns several.
N_SHARDS = 4
#: Shards of the keyed layouts: one per worker of the layout check, so no worker gets both ends
#: of the key range (the byte-balanced assignment would pair the first and last of 4 shards).
N_KEYED_SHARDS = 2
#: Share of the training labels hidden from semi-supervised estimators.
UNLABELLED_SHARE = 0.5
#: Share of rows whose ``key`` belongs to their own class (the others get a random key).
KEY_OWN_CLASS_SHARE = 0.6
#: Noise (in label units) of the label-ordered ``time`` column.
TIME_NOISE = 0.5
#: Names of the feature columns in the datasets; the last two are the partitioning columns.
FEATURE_NAMES = tuple(f"f{j}" for j in range(N_FEATURES - 2)) + ("key", "time")


@dataclass(frozen=True)
class Budget:
    """A parameter that bounds the work of a fit, and how the fitted model counts it.

    ``kind`` is ``"exact"`` (the count equals the budget: trees, epochs), ``"max"`` (at most the
    budget, and a ConvergenceWarning when the budget is used up) or ``"upto"`` (at most the
    budget; stopping there is normal, e.g. self-training rounds).
    """

    parameter: str
    attribute: str
    kind: str


@dataclass(frozen=True)
class EstimatorContract:
    """The guarantees of one catalogue estimator, with their tolerances.

    Attributes
    ----------
    name : str
        Catalogue key (``shardlearn.models.MODELS``).
    reference : str
        Single-process reference, ``"module:Class"``.
    params, reference_params : mapping
        Small parameters for quick conformance fits, ours and the reference's.
    score : str
        Test score compared across fits: ``accuracy``, ``inertia ratio`` (reference test inertia
        / ours: 1 is as good as the reference) or ``variance captured`` (share of the test
        variance the components keep).
    reference_tol : float
        Largest ``|score - reference score|`` on any layout.
    layout_tol : float
        Largest spread (max - min) of the score over :data:`LAYOUTS`.
    output_tol : float or None
        Largest absolute difference of the outputs (probabilities, decision values, centres,
        components) from the reference's on the same rows; None: compared by score only.
    worker_tol : float
        Largest absolute output difference between 1, 2 and 4 workers; 0 means identical.
    worker_measure : str
        ``"outputs"`` or ``"score"`` (for algorithms that are stochastic per worker count).
    weight_measure : str
        How weighted fits are compared: ``"outputs"`` (max abs difference) or ``"class mass"``
        (max abs difference of the mean predicted probability of each class).
    weight_tol : float
        Largest gap between a weighted fit and its ground truth (repeated rows for
        ``sample_weight``, the reference's class-weighted fit for ``class_weight``).
    kill_tol : float
        Largest absolute output difference between a fit that lost a worker and one that did
        not, and between checkpoint intervals.
    checkpoint : str or None
        The parameter that sets how often a fit checkpoints; the model must not depend on it.
    budgets : tuple of Budget
    sample_weight, class_weight : bool
        Supported (honoured); otherwise they must be refused with an error naming them.
    data : str
        ``"real"`` features or non-negative ``"counts"``.
    not_applicable : mapping
        Check name -> why that check does not apply to this estimator.
    """

    name: str
    reference: str
    params: Mapping[str, Any]
    reference_params: Mapping[str, Any]
    score: str = "accuracy"
    reference_tol: float = 0.03
    layout_tol: float = 0.03
    output_tol: float | None = None
    worker_tol: float = 0.0
    worker_measure: str = "outputs"
    weight_measure: str = "outputs"
    weight_tol: float = 1e-6
    kill_tol: float = 0.0
    checkpoint: str | None = None
    budgets: tuple[Budget, ...] = ()
    sample_weight: bool = True
    class_weight: bool = False
    data: str = "real"
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def make_reference(self) -> Any:
        """A fresh, unfitted single-process reference estimator."""
        if self.name == "self_training":
            from sklearn.linear_model import LogisticRegression
            from sklearn.semi_supervised import SelfTrainingClassifier

            return SelfTrainingClassifier(LogisticRegression(), **self.reference_params)
        module, _, name = self.reference.partition(":")
        return getattr(importlib.import_module(module), name)(**self.reference_params)


_NO_PROBA = "no predict_proba (decision values only)"
_UNSUPERVISED = "unsupervised: no labels, no classes"
# Row and column sampling, so a resumed or checkpointed boosting run must replay the samples.
_SAMPLING = {"subsample": 0.8, "colsample_bytree": 0.8}
_TREES = {"n_estimators": 12, "max_depth": 8, "random_state": 0}
_NEURAL = {
    "epochs": 8,
    "batch_size": 64,
    "learning_rate": 0.01,
    "early_stopping": False,
    "random_state": 0,
    "verbose": False,
}
_NEURAL_REFERENCE = {
    "max_iter": 8,
    "batch_size": 64,
    "learning_rate_init": 0.01,
    "random_state": 0,
}

ESTIMATOR_CONTRACTS: dict[str, EstimatorContract] = {
    c.name: c
    for c in (
        EstimatorContract(
            "logistic",
            "sklearn.linear_model:LogisticRegression",
            {"tol": 1e-8, "max_iter": 500},
            {"tol": 1e-10, "max_iter": 2000},
            reference_tol=0.005,
            layout_tol=0.005,
            output_tol=1e-4,
            worker_tol=1e-6,
            budgets=(Budget("max_iter", "n_iter_", "max"),),
            class_weight=True,
        ),
        EstimatorContract(
            "linear_svc",
            "sklearn.svm:LinearSVC",
            {"tol": 1e-8, "max_iter": 2000},
            # liblinear penalises the intercept as the weight of a constant feature of value
            # intercept_scaling; ours is unpenalised, the limit of a large intercept_scaling.
            {"intercept_scaling": 1000.0, "dual": False, "tol": 1e-12, "max_iter": 100000},
            reference_tol=0.005,
            layout_tol=0.005,
            output_tol=1e-3,
            worker_tol=1e-6,
            weight_tol=1e-5,
            budgets=(Budget("max_iter", "n_iter_", "max"),),
            class_weight=True,
            not_applicable={"predict_proba": _NO_PROBA},
        ),
        EstimatorContract(
            "sgd",
            "sklearn.linear_model:SGDClassifier",
            {"loss": "log_loss", "max_iter": 20, "tol": None, "random_state": 0},
            {"loss": "log_loss", "max_iter": 20, "tol": None, "random_state": 0},
            reference_tol=0.04,
            layout_tol=0.04,
            worker_measure="score",
            worker_tol=0.04,
            weight_measure="class mass",
            # scikit-learn's own class-weighted SGD moves the class mass by up to 0.065 from
            # one random_state to another (seeds 0-3 on this data).
            weight_tol=0.08,
            budgets=(Budget("max_iter", "n_iter_", "exact"),),
            class_weight=True,
        ),
        EstimatorContract(
            "gaussian_nb",
            "sklearn.naive_bayes:GaussianNB",
            {},
            {},
            reference_tol=1e-9,
            layout_tol=1e-9,
            output_tol=1e-9,
            worker_tol=1e-9,
            # var_smoothing's epsilon is scikit-learn's: from the unweighted variance of X,
            # which repeating rows changes (1.8e-9 here), so weights = repeats up to that.
            weight_tol=1e-7,
            not_applicable={"budgets": "one pass over the data: no iterations to bound"},
        ),
        EstimatorContract(
            "multinomial_nb",
            "sklearn.naive_bayes:MultinomialNB",
            {},
            {},
            reference_tol=1e-9,
            layout_tol=1e-9,
            output_tol=1e-9,
            worker_tol=1e-9,
            weight_tol=1e-9,
            data="counts",
            not_applicable={"budgets": "one pass over the data: no iterations to bound"},
        ),
        EstimatorContract(
            "random_forest",
            "sklearn.ensemble:RandomForestClassifier",
            _TREES,
            _TREES,
            reference_tol=0.05,
            layout_tol=0.04,
            weight_measure="class mass",
            weight_tol=0.05,
            budgets=(Budget("n_estimators", "n_estimators_", "exact"),),
            class_weight=True,
        ),
        EstimatorContract(
            "extra_trees",
            "sklearn.ensemble:ExtraTreesClassifier",
            _TREES,
            _TREES,
            reference_tol=0.05,
            layout_tol=0.04,
            weight_measure="class mass",
            weight_tol=0.05,
            budgets=(Budget("n_estimators", "n_estimators_", "exact"),),
            class_weight=True,
        ),
        EstimatorContract(
            "xgboost",
            "xgboost:XGBClassifier",
            # The checks are about the distributed trainer (worker counts, a killed worker):
            # "auto" would train these small fits in-process.
            {
                "n_estimators": 12,
                "max_depth": 3,
                "checkpoint_interval": 4,
                "execution": "workers",
                **_SAMPLING,
            },
            {"n_estimators": 12, "max_depth": 3, "tree_method": "hist", "random_state": 0}
            | _SAMPLING,
            reference_tol=0.02,
            layout_tol=0.02,
            # Each worker samples its own rows, so the sample depends on the worker count.
            worker_measure="score",
            worker_tol=0.02,
            weight_measure="class mass",
            weight_tol=0.02,
            kill_tol=1e-6,
            checkpoint="checkpoint_interval",
            budgets=(Budget("n_estimators", "n_estimators_", "exact"),),
        ),
        EstimatorContract(
            "mlp",
            "sklearn.neural_network:MLPClassifier",
            # The distributed path under test, never the cost model's in-process choice.
            {"hidden_layer_sizes": (16,), "dropout": 0.2, "execution": "workers", **_NEURAL},
            {"hidden_layer_sizes": (16,), **_NEURAL_REFERENCE},
            reference_tol=0.05,
            layout_tol=0.04,
            worker_tol=1e-5,
            weight_measure="class mass",
            weight_tol=0.05,
            kill_tol=1e-6,
            budgets=(Budget("epochs", "n_iter_", "exact"),),
        ),
        EstimatorContract(
            "convnet",
            "sklearn.neural_network:MLPClassifier",
            {
                "image_shape": (1, 2, 4),
                "channels": (4,),
                "kernel_size": 1,
                "pool": False,
                "hidden_layer_sizes": (16,),
                **_NEURAL,
            },
            {"hidden_layer_sizes": (16,), **_NEURAL_REFERENCE},
            reference_tol=0.06,
            layout_tol=0.04,
            worker_tol=1e-5,
            weight_measure="class mass",
            weight_tol=0.05,
            kill_tol=1e-6,
            budgets=(Budget("epochs", "n_iter_", "exact"),),
        ),
        EstimatorContract(
            "kmeans",
            "sklearn.cluster:KMeans",
            {"n_clusters": 3, "random_state": 0},
            {"n_clusters": 3, "n_init": 1, "random_state": 0},
            score="inertia ratio",
            reference_tol=0.02,
            layout_tol=0.02,
            worker_tol=1e-9,
            weight_tol=1e-6,
            budgets=(Budget("max_iter", "n_iter_", "max"),),
            not_applicable={"predict_proba": _UNSUPERVISED},
        ),
        EstimatorContract(
            "pca",
            "sklearn.decomposition:PCA",
            {"n_components": 3},
            {"n_components": 3},
            score="variance captured",
            reference_tol=1e-9,
            layout_tol=1e-9,
            output_tol=1e-9,
            worker_tol=1e-9,
            sample_weight=False,
            not_applicable={
                "predict_proba": _UNSUPERVISED,
                "budgets": "closed form from the merged moments: no iterations to bound",
            },
        ),
        EstimatorContract(
            "self_training",
            "sklearn.semi_supervised:SelfTrainingClassifier",
            {"threshold": 0.9, "max_rounds": 3},
            {"threshold": 0.9, "max_iter": 3},
            reference_tol=0.02,
            layout_tol=0.02,
            output_tol=1e-6,
            worker_tol=1e-6,
            sample_weight=False,
            budgets=(Budget("max_rounds", "n_rounds_", "upto"),),
        ),
    )
}


def contracts_markdown(contracts: Mapping[str, EstimatorContract] | None = None) -> str:
    """The contract table as markdown: what each estimator guarantees, within what tolerance."""
    rows = [
        "| estimator | single-process reference | test score vs reference | across layouts "
        "| 1, 2, 4 workers | sample_weight | class_weight | budgets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in (contracts or ESTIMATOR_CONTRACTS).values():
        outputs = f"; outputs within {c.output_tol:g}" if c.output_tol is not None else ""
        if c.worker_measure == "score":
            workers = f"{c.score} within {c.worker_tol:g}"
        else:
            workers = "identical" if c.worker_tol == 0 else f"outputs within {c.worker_tol:g}"
        budgets = ", ".join(f"`{b.parameter}`" for b in c.budgets) or "n/a"
        rows.append(
            f"| {c.name} | `{c.reference.replace(':', '.')}` | {c.score} within "
            f"{c.reference_tol:g}{outputs} | {c.layout_tol:g} | {workers} | "
            f"{_weight_cell(c, 'sample_weight')} | {_weight_cell(c, 'class_weight')} | {budgets} |"
        )
    return "\n".join(rows) + "\n"


def _weight_cell(contract: EstimatorContract, parameter: str) -> str:
    if not getattr(contract, parameter):
        return "refused"
    if parameter == "sample_weight":
        return f"= repeated rows ({contract.weight_measure} within {contract.weight_tol:g})"
    if contract.output_tol is not None:
        return f"= reference (outputs within {contract.output_tol:g})"
    return f"= reference (class mass within {contract.weight_tol:g})"


@dataclass
class ConformanceData:
    """Training and test rows of the conformance suite (deterministic for a seed)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.y[self.y >= 0])


def make_conformance_data(kind: str = "real", seed: int = 0) -> ConformanceData:
    """Three classes, eight features; ``kind="counts"`` gives non-negative counts instead.

    The last two features are the partitioning columns, and they are features like the others
    (a bare estimator trains on every numeric column, the reference on the same matrix):
    ``key`` takes 12 values, 60% of rows carry a key of their own class, so ``hash:key``
    shards are dominated by one class; ``time`` grows with the label (plus noise), so
    ``range:time`` shards are nearly sorted by label.
    """
    from sklearn.datasets import make_classification

    n = N_TRAIN + N_TEST
    X, y = make_classification(
        n,
        N_FEATURES - 2,
        n_informative=4,
        n_redundant=1,
        n_classes=N_CLASSES,
        n_clusters_per_class=1,
        class_sep=1.0,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    if kind == "counts":
        X = rng.poisson(np.exp(0.6 * X)).astype(np.float64)
    own = rng.random(n) < KEY_OWN_CLASS_SHARE
    code = np.where(own, 4 * y + rng.integers(0, 4, n), rng.integers(0, 4 * N_CLASSES, n))
    key = code / 4.0  # 12 distinct values, scaled like the other features
    time = np.argsort(np.argsort(y + TIME_NOISE * rng.standard_normal(n))) / (n / 3.0)
    X = np.column_stack([X, key, time])
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)
    return ConformanceData(X[train], y[train], X[test], y[test])


def hide_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """``y`` with :data:`UNLABELLED_SHARE` of its labels replaced by -1 (unlabelled)."""
    hidden = np.random.default_rng(seed).random(len(y)) < UNLABELLED_SHARE
    return np.where(hidden, -1, y)


class ConformanceBench:
    """Data, datasets and engines shared by the estimator checks; close it when done.

    Parameters
    ----------
    workdir : path
        Where the datasets are written.
    engine_name : str, default "local"
        ``"local"`` or ``"ray"`` (a Ray cluster that is already running is joined).
    """

    def __init__(self, workdir: str | Path, engine_name: str = "local") -> None:
        self.workdir = Path(workdir)
        self.engine_name = engine_name
        self._data: dict[str, ConformanceData] = {}
        self._datasets: dict[tuple, Any] = {}
        self._engines: dict[int, Any] = {}
        self._references: dict[str, Any] = {}
        #: Fitted models shared by the checks, by (class, parameters, layout, workers).
        self.fitted: dict[tuple, Any] = {}

    def data(self, contract: EstimatorContract) -> ConformanceData:
        """The rows ``contract`` trains on (real features or counts)."""
        if contract.data not in self._data:
            self._data[contract.data] = make_conformance_data(contract.data)
        return self._data[contract.data]

    def labels(self, contract: EstimatorContract, y: np.ndarray) -> np.ndarray:
        """Training labels as ``contract``'s estimator sees them (some hidden for self-training)."""
        return hide_labels(y) if contract.name == "self_training" else y

    def dataset(self, contract: EstimatorContract, strategy: str) -> Any:
        """The training rows written with ``strategy`` (all of them in the ``train`` split)."""
        semi = contract.name == "self_training"
        cache_key = (contract.data, semi, strategy)
        if cache_key not in self._datasets:
            import pyarrow as pa

            from shardlearn.data import write_dataset

            data = self.data(contract)
            y = self.labels(contract, data.y)
            columns = {name: data.X[:, j] for j, name in enumerate(FEATURE_NAMES)}
            columns["y"] = pa.array([None if v < 0 else int(v) for v in y], type=pa.int64())
            folder = "-".join(
                [contract.data, "semi" if semi else "full", strategy.replace(":", "-")]
            )
            self._datasets[cache_key] = write_dataset(
                pa.table(columns),
                self.workdir / folder,
                label="y",
                partitions=N_KEYED_SHARDS if ":" in strategy else N_SHARDS,
                strategy=strategy,
                allow_unlabeled=semi,
            )
        return self._datasets[cache_key]

    def engine(self, workers: int) -> Any:
        """The bench's engine with ``workers`` workers (created once)."""
        if workers not in self._engines:
            from shardlearn.engine import create_engine

            self._engines[workers] = create_engine(self.engine_name, workers=workers)
        return self._engines[workers]

    def reference(self, contract: EstimatorContract) -> Any:
        """The single-process reference fitted on all training rows (fitted once)."""
        if contract.name not in self._references:
            import warnings

            from sklearn.exceptions import ConvergenceWarning

            data = self.data(contract)
            model = contract.make_reference()
            with warnings.catch_warnings():
                # The reference runs the same small budget as ours; not converging is expected.
                warnings.simplefilter("ignore", ConvergenceWarning)
                if contract.score == "accuracy":
                    model.fit(data.X, self.labels(contract, data.y))
                else:
                    model.fit(data.X)
            self._references[contract.name] = model
        return self._references[contract.name]

    def close(self) -> None:
        """Close the engines this bench created."""
        for eng in self._engines.values():
            eng.close()
        self._engines.clear()
        self.fitted.clear()


def estimator_for(contract: EstimatorContract, **params: Any) -> Any:
    """A fresh catalogue estimator with the contract's parameters (and ``params`` on top)."""
    from shardlearn.models import MODELS

    return MODELS[contract.name](**{**contract.params, **params})
