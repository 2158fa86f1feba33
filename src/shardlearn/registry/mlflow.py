"""MLflow interop: a model exported as an MLflow pyfunc model, and runs logged to a tracking store.

Export (:func:`export_mlflow`) writes an MLflow model directory with mlflow's own
``mlflow.pyfunc.save_model`` in its *loader module* workflow: the verified shardlearn artifact
is copied unchanged to ``DIR/data/model`` and the ``MLmodel`` file names this module as the
loader, so ``mlflow.pyfunc.load_model(DIR)`` calls :func:`_load_pyfunc`, which reads the copy
with :func:`shardlearn.load` -- file hashes, and the signature and decryption when keys are
configured, exactly as everywhere else. Nothing is pickled (mlflow's ``python_model`` workflow
would cloudpickle an object into the directory). The model's ``predict`` returns one
``proba_<class>`` column per class in the order of ``classes_`` (what ``predict_proba`` gives);
a model without probabilities (margin classifiers, KMeans) returns one ``prediction`` column.
The signature comes from the artifact's input schema (numeric -> double, or "any" for integer
dtypes; boolean -> boolean; categorical/text -> string; datetime -> datetime), and the
environment pins ``shardlearn==VERSION`` (with the ``torch`` extra when the model brings torch
weights) beside mlflow's own pin.

Tracking (:func:`tracking_run`) opens an MLflow run on a tracking URI (``sqlite:///mlflow.db``,
``http://host:5000``, a ``file:`` store) in the experiment ``$MLFLOW_EXPERIMENT_NAME`` (default
``shardlearn``); :class:`TrackedRun` logs parameters (nested dicts flattened to dotted keys),
finite numeric metrics, files such as the HTML report, the model (as the same pyfunc model) and
nested child runs (one per search trial or pipeline stage). A run whose body raises is ended
as FAILED. mlflow is an optional dependency (``pip install 'shardlearn[mlflow]'``), imported
only here and only when used.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from shardlearn.exceptions import ArtifactError, ShardlearnError
from shardlearn.registry.artifact import Artifact, load
from shardlearn.registry.store import read_verified

__all__ = [
    "EXPERIMENT_ENV",
    "TRACKING_URI_ENV",
    "TrackedRun",
    "check_store",
    "export_mlflow",
    "tracking_run",
]

#: The environment variable ``--mlflow`` falls back to.
TRACKING_URI_ENV = "SHARDLEARN_MLFLOW_URI"
#: MLflow's own variable for the experiment name.
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "shardlearn"

# The MLflow column type of each schema kind. An integer column takes MLflow's "any" type:
# MLflow refuses int64 data for a "double" column and float64 data (what pandas makes of an
# integer column with a missing value) for a "long" one, and shardlearn's own input schema
# checks the values when the model predicts. Other numeric columns are "double" (MLflow's
# enforcement upcasts narrower ints and floats).
_COLUMN_TYPES = {
    "boolean": "boolean",
    "categorical": "string",
    "text": "string",
    "datetime": "datetime",
}
_ARTIFACT_DIR = "model"  # the artifact's folder name under DIR/data
_TORCH_WEIGHTS_SUFFIX = ".safetensors"
# MLflow's limits on a parameter value and on a key (longer values are refused by the store).
_MAX_PARAM_VALUE = 6000
_MAX_KEY = 250
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
_MLFLOW_IMPORT_WARNING = r".*Any type hint is inferred as AnyType"
# The signature comes from the schema; an input example would copy rows of (possibly private)
# training data into every exported model, so none is given and mlflow's advice is muted.
_NO_INPUT_EXAMPLE_WARNING = r".*An input example was not provided"


def _mlflow() -> Any:
    try:
        with warnings.catch_warnings():
            # mlflow.pyfunc warns about its own type hints while importing (not our code).
            warnings.filterwarnings("ignore", _MLFLOW_IMPORT_WARNING, UserWarning)
            import mlflow
            import mlflow.pyfunc
    except ImportError:
        raise ShardlearnError(
            "MLflow support needs the mlflow extra: pip install 'shardlearn[mlflow]'"
        ) from None
    return mlflow


def check_store(uri: str) -> None:
    """Fail early, with one line, when mlflow is missing or ``uri`` is no usable tracking store.

    Creates the experiment when it does not exist yet, so a command can check its ``--mlflow``
    before hours of training rather than after.
    """
    _experiment_id(_mlflow(), uri)


# --- the pyfunc model --------------------------------------------------------------------


class _PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict(DataFrame) -> DataFrame``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes = list(getattr(model, "classes_", []))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Probabilities (``proba_<class>``) or, without them, the ``prediction`` column."""
        import pandas as pd

        if params:
            raise ShardlearnError(
                f"A shardlearn MLflow model takes no inference parameters. Got {sorted(params)}."
            )
        if hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(model_input), dtype=np.float64)
            columns = {f"proba_{label}": proba[:, j] for j, label in enumerate(self.classes)}
            return pd.DataFrame(columns, index=model_input.index)
        prediction = np.asarray(self.model.predict(model_input))
        return pd.DataFrame({"prediction": prediction}, index=model_input.index)


def _load_pyfunc(data_path: str) -> _PyfuncModel:
    """MLflow's loader hook: the artifact under ``data_path``, read with :func:`shardlearn.load`.

    The configured keys apply (``SHARDLEARN_SIGNING_KEY``, ``SHARDLEARN_ENCRYPTION_KEY``, ...):
    a tampered copy, or an unsigned one where a key is set, is refused.
    """
    return _PyfuncModel(load(data_path))


def _column_type(column: dict[str, Any]) -> Any:
    if column["kind"] != "numeric":
        return _COLUMN_TYPES[column["kind"]]
    if str(column.get("dtype", "")).startswith(("int", "uint")):
        from mlflow.types.schema import AnyType

        return AnyType()
    return "double"


def _signature(artifact: Artifact) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    columns = (artifact.input_schema or {}).get("columns") or []
    if not columns:
        raise ArtifactError(
            f"{artifact.path} records no input schema; MLflow export needs a model trained on "
            "named columns (a Pipeline from shardlearn train, or fit on a table)."
        )
    inputs = Schema([ColSpec(_column_type(c), c["name"]) for c in columns])
    model = artifact.to_model()
    if hasattr(model, "predict_proba"):
        outputs = Schema([ColSpec("double", f"proba_{label}") for label in artifact.classes])
    else:
        outputs = None  # a label or cluster index whose type the schema does not record
    return ModelSignature(inputs=inputs, outputs=outputs)


def _requirements(artifact: Artifact) -> list[str]:
    """``shardlearn[EXTRAS]==VERSION``: the extras the model needs to load and predict."""
    import shardlearn

    torch = any(name.endswith(_TORCH_WEIGHTS_SUFFIX) for name in artifact.files)
    # mlflow adds its own pin (mlflow==VERSION) to the requirements it writes.
    return [f"shardlearn{'[torch]' if torch else ''}=={shardlearn.__version__}"]


@contextmanager
def _staged(artifact: Artifact) -> Iterator[Path]:
    """A local copy of the artifact's directory named ``model`` (downloaded from a URI)."""
    from shardlearn.registry._remote import downloaded, is_uri

    with tempfile.TemporaryDirectory(prefix="shardlearn-mlflow-") as tmp:
        staged = Path(tmp) / _ARTIFACT_DIR
        if is_uri(artifact.path):
            with downloaded(str(artifact.path)) as local:
                shutil.copytree(local, staged)
        else:
            shutil.copytree(artifact.path, staged)
        yield staged


def _pyfunc_options(artifact: Artifact, staged: Path) -> dict[str, Any]:
    return {
        "loader_module": __name__,
        "data_path": str(staged),
        "signature": _signature(artifact),
        "pip_requirements": _requirements(artifact),
        "metadata": {
            "shardlearn_model_type": artifact.model_type,
            "shardlearn_artifact_id": artifact.header.get("artifact_id"),
        },
    }


def _as_artifact(source: Artifact | str | os.PathLike[str]) -> Artifact:
    return source if isinstance(source, Artifact) else read_verified(source)


def export_mlflow(source: Artifact | str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write an MLflow model directory (pyfunc flavour) holding a shardlearn model.

    Parameters
    ----------
    source : Artifact, str or path
        A verified :class:`Artifact` (``Registry.read``), an artifact path or a registry
        reference (``"models/loans@production"``).
    out : str or path
        The directory to create; it must not exist.

    Returns
    -------
    Path
        ``out``. ``mlflow.pyfunc.load_model(out).predict(df)`` returns ``predict_proba(df)``
        as ``proba_<class>`` columns.

    Examples
    --------
    >>> import mlflow
    >>> import pandas as pd
    >>> import shardlearn as sl
    >>> df = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    >>> model = sl.LogisticRegression().fit(df, [0, 0, 1, 1], engine="local")
    >>> _ = sl.save(model, "models/loans-lr")
    >>> export_mlflow("models/loans-lr", "loans-mlflow")
    PosixPath('loans-mlflow')
    >>> mlflow.pyfunc.load_model("loans-mlflow").predict(df).columns.tolist()
    ['proba_0', 'proba_1']
    """
    mlflow = _mlflow()
    out = Path(out)
    if out.exists():
        raise ArtifactError(f"{out} already exists; choose a new --out directory.")
    artifact = _as_artifact(source)
    with _staged(artifact) as staged, warnings.catch_warnings():
        warnings.filterwarnings("ignore", _NO_INPUT_EXAMPLE_WARNING, UserWarning)
        mlflow.pyfunc.save_model(str(out), **_pyfunc_options(artifact, staged))
    return out


# --- tracking ----------------------------------------------------------------------------


def _key(name: str) -> str:
    """A metric or parameter name MLflow accepts (other characters become ``_``)."""
    return _UNSAFE_KEY.sub("_", name)[:_MAX_KEY]


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_MAX_PARAM_VALUE]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class TrackedRun:
    """One open MLflow run; create it with :func:`tracking_run` or :meth:`child`."""

    def __init__(self, mlflow: Any, run: Any, experiment_id: str) -> None:
        self._mlflow = mlflow
        self._experiment_id = experiment_id
        self.run_id: str = run.info.run_id

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log parameters; nested mappings become dotted keys, other values JSON text."""
        flat = {_key(k): _param_text(v) for k, v in _flatten(params, prefix).items()}
        if flat:
            self._mlflow.log_params(flat)

    def log_metrics(
        self, metrics: Mapping[str, Any], prefix: str = "", step: int | None = None
    ) -> None:
        """Log the finite numbers of ``metrics`` (nested mappings flattened); skip the rest."""
        numbers = {
            _key(k): v
            for k, v in ((k, _finite(v)) for k, v in _flatten(metrics, prefix).items())
            if v is not None
        }
        if numbers:
            self._mlflow.log_metrics(numbers, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as text)."""
        self._mlflow.set_tags({_key(k): _param_text(v) for k, v in tags.items()})

    def log_file(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        """Upload a file (e.g. the HTML report) to the run's artifacts."""
        self._mlflow.log_artifact(os.fspath(path), artifact_path=folder)

    def log_text(self, text: str, name: str) -> None:
        """Write ``text`` as the run artifact ``name`` (e.g. ``report.html``)."""
        self._mlflow.log_text(text, name)

    def log_model(self, source: Artifact | str | os.PathLike[str], name: str = "model") -> None:
        """Log a saved model as the run's pyfunc model ``name`` (see :func:`export_mlflow`)."""
        artifact = _as_artifact(source)
        with _staged(artifact) as staged, warnings.catch_warnings():
            warnings.filterwarnings("ignore", _NO_INPUT_EXAMPLE_WARNING, UserWarning)
            self._mlflow.pyfunc.log_model(name=name, **_pyfunc_options(artifact, staged))

    @contextmanager
    def child(self, name: str) -> Iterator[TrackedRun]:
        """A nested run under this one (one per search trial or pipeline stage)."""
        with self._mlflow.start_run(
            run_name=name, experiment_id=self._experiment_id, nested=True
        ) as run:
            yield TrackedRun(self._mlflow, run, self._experiment_id)


def _experiment_id(mlflow: Any, uri: str) -> str:
    """The id of the experiment runs go to (created if missing) in the store at ``uri``."""
    name = os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(client.create_experiment(name))
    except mlflow.exceptions.MlflowException as error:
        reason = (str(error).strip().splitlines() or [""])[0][:300]
        raise ShardlearnError(f"MLflow tracking store {uri!r}: {reason}") from None


@contextmanager
def tracking_run(
    uri: str, name: str, *, tags: Mapping[str, Any] | None = None
) -> Iterator[TrackedRun]:
    """Open a run named ``name`` on the tracking store ``uri``; end it when the block exits.

    Parameters
    ----------
    uri : str
        An MLflow tracking URI: ``sqlite:///mlflow.db``, ``http://host:5000``, ...
    name : str
        The run's name, e.g. the command (``train``) and the model.
    tags : mapping, optional
        Tags of the run (``shardlearn.command`` is always set).

    Examples
    --------
    Not run as a test: creating an MLflow SQLite store migrates its schema, which takes seconds.

    >>> with tracking_run("sqlite:///mlflow.db", "train logistic") as run:   # doctest: +SKIP
    ...     run.log_params({"C": 0.5}); run.log_metrics({"valid_accuracy": 0.91})
    """
    mlflow = _mlflow()
    # mlflow keeps the URI in this variable too; None afterwards unsets both again.
    previous = os.environ.get(_TRACKING_URI_VARIABLE)
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(mlflow, uri)
        with mlflow.start_run(run_name=name, experiment_id=experiment_id) as run:
            tracked = TrackedRun(mlflow, run, experiment_id)
            tracked.set_tags(dict(tags or {}))
            yield tracked
    finally:
        mlflow.set_tracking_uri(previous)
