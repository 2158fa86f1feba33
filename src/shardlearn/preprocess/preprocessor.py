"""The Preprocessor: per-column specs, grouped into mergeable transformers, fitted across shards.

A spec maps each input column to a kind (``numeric``, ``categorical``, ``text``, ``boolean``,
``datetime`` or ``drop``) and that kind's options. Columns with the same kind and options share
one transformer (28 numeric columns are one vectorised :class:`NumericTransformer`); the output
features follow the order in which each transformer's first column appears in the spec.

Distributed fit (:meth:`Preprocessor.fit_group`): every worker partially fits one copy per
shard of its ``state.shards``; the driver merges the copies in shard-index order with a pairwise
tree and finalizes. Because the merge order depends only on the shards -- never on which worker
read them -- the fitted state is identical for any number of workers and either engine.

Model-aware defaults: the ``profile`` parameter fills the options a column spec leaves out
(text hashed into 2**18 terms for linear models, 256 for trees and nets; see
:mod:`shardlearn.preprocess.profiles`). ``profile="auto"`` (what :meth:`Preprocessor.auto`
gives) is resolved by the Pipeline from its final estimator (:meth:`Preprocessor.for_estimator`)
before the fit, and :meth:`Preprocessor.check_memory` refuses a model that would densify more
than the memory budget -- both from the spec alone, before any shard is read.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from shardlearn._validation import Interval, Options, Type, unknown_name_message
from shardlearn.base import BaseEstimator
from shardlearn.exceptions import DataError, NotFittedError, ResourceError, SchemaError, SpecError
from shardlearn.preprocess._base import ColumnTransformer
from shardlearn.preprocess._batch import SMALL_BATCH_ROWS, as_table
from shardlearn.preprocess.boolean import BooleanEncoder
from shardlearn.preprocess.categorical import CategoricalEncoder, HashingEncoder
from shardlearn.preprocess.datetime import DatetimeEncoder
from shardlearn.preprocess.numeric import NumericTransformer
from shardlearn.preprocess.profiles import (
    COMPACT_TEXT_FEATURES,
    PREPROCESSOR_PROFILES,
    dense_overflow,
    preprocessor_profile,
    profile_defaults,
)
from shardlearn.preprocess.text import TextVectorizer

if TYPE_CHECKING:
    from shardlearn.data import Schema

__all__ = ["KINDS", "Preprocessor", "read_spec"]

KINDS = ("numeric", "categorical", "text", "boolean", "datetime", "drop")
TRANSFORMERS: dict[str, type[ColumnTransformer]] = {
    cls.__name__: cls
    for cls in (
        NumericTransformer,
        CategoricalEncoder,
        HashingEncoder,
        TextVectorizer,
        DatetimeEncoder,
        BooleanEncoder,
    )
}
#: Above this many output features a block that contains sparse (hashed/text) features is CSR.
MAX_DENSE_FEATURES = 4096
STATE_FORMAT = 1


def _transformer_for(
    name: str, spec: dict[str, Any], profile: str = "auto"
) -> tuple[type[ColumnTransformer], dict]:
    """The transformer class and its options for one column's spec; options the spec leaves
    out take the profile's defaults (:mod:`shardlearn.preprocess.profiles`)."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind not in KINDS:
        raise SpecError(f"Column {name!r}: " + unknown_name_message("kind", str(kind), KINDS))
    cls: type[ColumnTransformer]
    if kind == "categorical":
        encoding = options.pop("encoding", "onehot")
        if encoding not in ("onehot", "hash"):
            raise SpecError(
                f"Column {name!r}: unknown categorical encoding {encoding!r}. Valid: hash, onehot."
            )
        cls = CategoricalEncoder if encoding == "onehot" else HashingEncoder
    else:
        cls = {
            "numeric": NumericTransformer,
            "text": TextVectorizer,
            "boolean": BooleanEncoder,
            "datetime": DatetimeEncoder,
        }[kind]
    valid = _option_names(cls)
    for key in options:
        if key not in valid:
            raise SpecError(
                f"Column {name!r} ({kind}): "
                + unknown_name_message(f"option of {cls.__name__}", key, valid)
            )
    options = {**profile_defaults(profile, cls.__name__), **options}
    try:
        cls(columns=[name], **options)._validate_params()
    except ValueError as exc:
        raise SpecError(f"Column {name!r}: {exc}") from None
    return cls, options


def _option_names(cls: type[ColumnTransformer]) -> list[str]:
    return [p for p in cls._param_names() if p != "columns"]


def _normalise_spec(columns: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not isinstance(columns, dict):
        raise SpecError(
            "'columns' must map column names to a kind or a dict such as "
            f"{{'kind': 'numeric', 'scale': 'robust'}}; got {type(columns).__name__}."
        )
    out = {}
    for name, spec in columns.items():
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            raise SpecError(f"Column {name!r}: expected a kind name or a dict, got {spec!r}.")
        out[str(name)] = dict(spec)
    return out


def _tree_merge(parts: list[Any]) -> Any:
    """Merge neighbours pairwise until one is left (order-preserving, balanced)."""
    while len(parts) > 1:
        merged = [parts[i].merge(parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = merged + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _fit_shards(state: Any, pre: Preprocessor, split: str) -> list[tuple[int, Preprocessor]]:
    """Worker side of :meth:`Preprocessor.fit_group`: one partial fit per shard of ``split``."""
    partials = []
    columns = pre.input_columns
    for shard in state.shards:
        if shard.split != split:
            continue
        partial = pre._unfitted_copy()
        partial._start()
        for batch in shard.iter_batches(columns=columns):
            partial.partial_fit(batch)
        partials.append((shard.index, partial))
    return partials


class Preprocessor(BaseEstimator):
    """Per-column preprocessing fitted across shards; see the module notes.

    Parameters
    ----------
    columns : dict
        Column name -> kind name or a dict ``{"kind": ..., **options}``. Options per kind:
        numeric -> :class:`NumericTransformer` (``impute``, ``fill_value``, ``add_indicator``,
        ``scale``, ``clip``, ``sketch_k``); categorical -> ``encoding`` ("onehot" or "hash")
        plus :class:`CategoricalEncoder` (``top_k``, ``max_tracked``) or
        :class:`HashingEncoder` (``n_features``, ``alternate_sign``) options; text ->
        :class:`TextVectorizer`; datetime -> :class:`DatetimeEncoder`; boolean; drop.
    label : str or None, default None
        The label column (never a feature); taken from the dataset's schema when None.
    output : {"auto", "dense", "sparse"}, default "auto"
        ``auto`` gives CSR when hashed/text features make the block wider than
        ``max_dense_features``, dense float32 otherwise.
    max_dense_features : int, default 4096
    profile : {"auto", "wide_sparse", "compact"}, default "auto"
        Defaults of the options a column spec leaves out: ``wide_sparse`` hashes text into
        2**18 terms per column (linear models), ``compact`` into 256 (trees, boosting, nets;
        see :mod:`shardlearn.preprocess.profiles`). ``auto`` becomes the final estimator's
        profile when a :class:`~shardlearn.models.Pipeline` fits (:meth:`for_estimator`), and
        is ``wide_sparse`` when the preprocessor is fitted on its own.

    Examples
    --------
    >>> pre = Preprocessor({"age": "numeric", "job": {"kind": "categorical", "top_k": 1}})
    >>> pre = pre.fit({"age": [30.0, 50.0], "job": ["a", "b"]})
    >>> pre.feature_names_out_
    ['age', 'job=b', 'job=__other__']
    >>> pre.transform({"age": [40.0], "job": ["never seen"]}).tolist()
    [[0.0, 0.0, 1.0]]
    """

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "columns": [Type(dict, "a dict")],
        "label": [Type(str), Type(type(None))],
        "output": [Options(("auto", "dense", "sparse"))],
        "max_dense_features": [Interval("int", 1, None)],
        "profile": [Options(PREPROCESSOR_PROFILES)],
    }
    # Fitted state set outside __init__ (declared here for the type checker).
    input_schema: Schema | None
    _fingerprint: str | None

    def __init__(
        self,
        columns: dict[str, Any],
        label: str | None = None,
        output: str = "auto",
        max_dense_features: int = MAX_DENSE_FEATURES,
        profile: str = "auto",
    ) -> None:
        self.columns = columns
        self.label = label
        self.output = output
        self.max_dense_features = max_dense_features
        self.profile = profile

    # -- construction --------------------------------------------------------------------
    @classmethod
    def auto(cls, schema: Any, profile: str = "auto", **options: Any) -> Preprocessor:
        """One spec per feature column of ``schema`` by its kind.

        ``options`` are per-kind defaults, e.g. ``auto(schema, numeric={"scale": "robust"},
        categorical={"top_k": 50})``; what they leave out follows ``profile`` -- by default the
        profile of the model a Pipeline fits (compact text for trees and nets, 2**18 hashed
        terms for linear models).
        """
        unknown = [k for k in options if k not in KINDS]
        if unknown:
            raise SpecError(unknown_name_message("kind", unknown[0], KINDS))
        columns = {
            col.name: {"kind": col.kind, **options.get(col.kind, {})}
            for col in schema.feature_columns
        }
        return cls(columns=columns, label=schema.label, profile=profile)

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | str | Path, schema: Any = None) -> Preprocessor:
        """A Preprocessor from a dict or a YAML/JSON file.

        Keys: ``columns`` (as the parameter), optional ``label``, ``output``,
        ``max_dense_features``, ``profile``, and ``auto: true`` to add every other feature
        column of ``schema`` by its kind (``defaults`` holds per-kind options for those).
        """
        if isinstance(spec, str | Path):
            spec = read_spec(spec)
        if not isinstance(spec, dict):
            raise SpecError(f"A preprocessing spec must be a mapping; got {type(spec).__name__}.")
        allowed = (
            "columns", "label", "output", "max_dense_features", "profile", "auto", "defaults"
        )  # fmt: skip
        for key in spec:
            if key not in allowed:
                raise SpecError(unknown_name_message("preprocessing spec key", key, allowed))
        columns = _normalise_spec(spec.get("columns", {}))
        label = spec.get("label")
        if spec.get("auto"):
            if schema is None:
                raise SpecError("'auto: true' in a preprocessing spec needs the dataset schema.")
            base = cls.auto(schema, **spec.get("defaults", {}))
            columns = {**base.columns, **columns}
            label = label or schema.label
        extra = {k: spec[k] for k in ("output", "max_dense_features", "profile") if k in spec}
        pre = cls(columns=columns, label=label, **extra)
        pre._build()
        return pre

    @property
    def input_columns(self) -> list[str]:
        """Input columns the preprocessor reads (every column not marked ``drop``)."""
        return [n for n, s in _normalise_spec(self.columns).items() if s.get("kind") != "drop"]

    def _build(self) -> list[ColumnTransformer]:
        """Validate the spec and group its columns into transformers."""
        self._validate_params()
        groups: dict[tuple, tuple[type[ColumnTransformer], dict, list[str]]] = {}
        for name, spec in _normalise_spec(self.columns).items():
            if name == self.label:
                raise SpecError(f"Column {name!r} is the label; it cannot also be a feature.")
            if spec.get("kind") == "drop":
                continue
            cls, options = _transformer_for(name, spec, self.profile)
            key = (cls.__name__, json.dumps(options, sort_keys=True, default=str))
            groups.setdefault(key, (cls, options, []))[2].append(name)
        return [cls(columns=names, **options) for cls, options, names in groups.values()]

    @classmethod
    def for_schema(cls, schema: Any, spec: dict[str, Any] | str | Path | None = None) -> Self:
        """:meth:`auto` when ``spec`` is None, else :meth:`from_spec` (what ``--preprocess``
        gives ``train`` and ``search``)."""
        return cls.auto(schema) if spec is None else cls.from_spec(spec, schema=schema)

    def for_estimator(self, estimator: Any) -> Preprocessor:
        """This preprocessor with ``profile="auto"`` resolved to ``estimator``'s declared
        profile (an unfitted copy; ``self`` when fitted or the profile is set)."""
        if self.profile != "auto" or hasattr(self, "transformers_"):
            return self
        resolved = self._unfitted_copy()
        resolved.profile = preprocessor_profile(estimator)
        return resolved

    def column_widths(self) -> dict[str, int]:
        """Output features per input column, known before the fit (an upper bound for
        one-hot columns: ``top_k + 1``)."""
        self._validate_params()
        widths = {}
        for name, spec in _normalise_spec(self.columns).items():
            if spec.get("kind") != "drop" and name != self.label:
                cls, options = _transformer_for(name, spec, self.profile)
                widths[name] = _width(cls(columns=[name], **options))
        return widths

    def check_memory(self, estimator: Any, rows: int, budget: int | None = None) -> None:
        """Refuse, before any fit, a model that would densify more than the memory budget.

        Raises
        ------
        ResourceError
            One line naming the widest column and the spec key that narrows it.
        """
        widths = self.column_widths()
        problem = dense_overflow(estimator, sum(widths.values()), rows, budget)
        if not problem:
            return
        wide = max(widths, key=lambda name: widths[name])
        raise ResourceError(
            f"{problem}. Column {wide!r} alone is {widths[wide]:,} features: narrow it in a "
            f"preprocessing spec ({_narrowing_hint(wide, _normalise_spec(self.columns)[wide])}; "
            "shardlearn train/search --preprocess FILE), or drop it."
        )

    def _unfitted_copy(self) -> Preprocessor:
        return type(self)(**copy.deepcopy(self.get_params(deep=False)))

    def _start(self) -> None:
        if not hasattr(self, "_parts"):
            self._parts = self._build()

    # -- fitting -------------------------------------------------------------------------
    def partial_fit(self, batch: Any) -> Self:
        """Accumulate statistics of one batch (Arrow, pandas or a dict of columns)."""
        self._start()
        table = as_table(batch)
        if getattr(self, "_arrow_schema", None) is None and table.num_columns:
            self._arrow_schema = table.select(self.input_columns).schema
        for part in self._parts:
            part.partial_fit(table)
        return self

    def merge(self, other: Preprocessor) -> Self:
        """Fold another partial fit of the same spec into this one (associative)."""
        if other.get_params() != self.get_params():
            raise ValueError("Cannot merge Preprocessors with different parameters.")
        self._start()
        other._start()
        for mine, theirs in zip(self._parts, other._parts, strict=True):
            mine.merge(theirs)
        if getattr(self, "_arrow_schema", None) is None:
            self._arrow_schema = getattr(other, "_arrow_schema", None)
        return self

    def finalize(self) -> Self:
        """Turn the merged statistics into the fitted state; returns ``self``."""
        self._start()
        self.transformers_ = [part.finalize() for part in self._parts]
        del self._parts
        self._set_outputs()
        if not hasattr(self, "label_"):
            self.label_ = self.label
        if not hasattr(self, "input_schema"):
            self.input_schema = None
        return self

    def _set_outputs(self) -> None:
        names: list[str] = []
        for t in self.transformers_:
            names += t.feature_names_out_
        self.feature_names_out_ = names
        self.n_features_out_ = len(names)
        wide = any(t.sparse_output for t in self.transformers_) and (
            self.n_features_out_ > self.max_dense_features
        )
        self.sparse_ = self.output == "sparse" or (self.output == "auto" and wide)
        self._fingerprint = None

    def fit(self, data: Any, engine: Any = None, split: str = "train") -> Self:
        """Fit on a Dataset (distributed over ``engine``'s workers) or on one in-memory batch.

        Parameters
        ----------
        data : Dataset or table-like
            A :class:`shardlearn.data.Dataset` is fitted shard by shard on a WorkerGroup of
            ``engine`` (explicit > current context > ``$SHARDLEARN_ENGINE`` > local); an Arrow
            table, DataFrame or dict of columns is fitted in this process.
        engine : Engine, str or None
        split : str, default "train"
        """
        for name in ("transformers_", "_parts", "label_"):
            self.__dict__.pop(name, None)
        if not (hasattr(data, "shards") and hasattr(data, "schema")):
            self.partial_fit(data).finalize()
            self.input_schema = _infer_schema(self, as_table(data))
            return self
        from shardlearn.engine import get_engine

        self.label_ = self.label if self.label is not None else data.schema.label
        if self.label_ in self.input_columns:
            raise SpecError(f"Column {self.label_!r} is the label; it cannot also be a feature.")
        self._check_against_schema(data.schema)
        shards = data.shards(split)
        if not shards:
            raise DataError(f"Dataset {data.uri} has no shards in split {split!r}.")
        with get_engine(engine).workers() as group:
            group.assign(shards)
            return self.fit_group(group, split=split, _schema=data.schema)

    def fit_group(self, group: Any, split: str = "train", _schema: Any = None) -> Self:
        """Fit on an existing WorkerGroup whose shards are assigned; returns ``self``."""
        self.__dict__.pop("transformers_", None)
        self.__dict__.pop("_parts", None)
        template = self._unfitted_copy()
        template._build()  # a bad spec fails here, before any worker starts
        partials = [p for worker in group.run(_fit_shards, template, split) for p in worker]
        if not partials:
            raise DataError(f"No worker holds a shard of split {split!r}; assign shards first.")
        partials.sort(key=lambda pair: pair[0])
        merged = _tree_merge([partial for _, partial in partials])
        self._parts = merged._parts
        self.__dict__.pop("input_schema", None)
        self.finalize()
        if _schema is not None:
            self.input_schema = _subschema(_schema, self.input_columns)
        elif getattr(merged, "_arrow_schema", None) is not None:
            self.input_schema = _infer_schema(self, merged._arrow_schema.empty_table())
        return self

    def _check_against_schema(self, schema: Any) -> None:
        names = set(schema.names)
        missing = [c for c in self.input_columns if c not in names]
        if missing:
            raise SchemaError(
                f"The preprocessor expects column {missing[0]!r}, which the dataset does not "
                f"have. Dataset columns: {', '.join(schema.names)}."
            )

    # -- transform -----------------------------------------------------------------------
    def transform(self, batch: Any) -> np.ndarray | sp.csr_matrix:
        """Float32 features of ``batch``: dense ``(rows, n_features_out_)`` or CSR."""
        if not hasattr(self, "transformers_"):
            raise NotFittedError(
                "This Preprocessor is not fitted yet. Call 'fit' (or partial_fit/finalize)."
            )
        table = as_table(batch)
        blocks = [t._transform(table) for t in self.transformers_]
        if self.sparse_ and blocks and table.num_rows <= SMALL_BATCH_ROWS:
            return _stack_small(blocks, table.num_rows)
        if self.sparse_:
            return sp.hstack(
                [sp.csr_matrix(b) for b in blocks] or [sp.csr_matrix((table.num_rows, 0))],
                format="csr",
                dtype=np.float32,
            )
        dense = [b if isinstance(b, np.ndarray) else b.toarray() for b in blocks]
        if len(dense) == 1:
            return np.ascontiguousarray(dense[0], dtype=np.float32)
        if not dense:
            return np.zeros((table.num_rows, 0), dtype=np.float32)
        return np.hstack(dense).astype(np.float32, copy=False)

    def fit_transform(self, data: Any) -> np.ndarray | sp.csr_matrix:
        """Fit on an in-memory batch and transform it."""
        return self.fit(data).transform(data)

    def estimated_nbytes(self, rows: int) -> int:
        """Estimated bytes of the feature block of ``rows`` rows (for memory budgets)."""
        if not self.sparse_:
            return rows * self.n_features_out_ * 4
        nonzeros = 0.0
        for t in self.transformers_:
            if isinstance(t, TextVectorizer):
                nonzeros += t.mean_nonzeros_
            elif isinstance(t, HashingEncoder | CategoricalEncoder):
                nonzeros += len(t.columns)
            else:
                nonzeros += t.n_features_out_
        return int(rows * (nonzeros * 8 + 4))  # CSR: float32 value + int32 index, row pointers

    @property
    def fingerprint(self) -> str:
        """A short hash of the fitted state (cache key for feature blocks)."""
        fingerprint = getattr(self, "_fingerprint", None)
        if fingerprint is None:
            meta, arrays = self.get_state()
            digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
            for name in sorted(arrays):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(arrays[name]).tobytes())
            fingerprint = self._fingerprint = digest.hexdigest()[:16]
        return fingerprint

    # -- plain state ---------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted preprocessor as (JSON-able metadata, named NumPy arrays); no pickle."""
        if not hasattr(self, "transformers_"):
            raise NotFittedError("This Preprocessor is not fitted yet; there is no state.")
        meta: dict[str, Any] = {
            "format": STATE_FORMAT,
            "params": self.get_params(deep=False),
            "label": self.label_,
            "input_schema": None if self.input_schema is None else self.input_schema.to_dict(),
            "transformers": [],
        }
        arrays: dict[str, np.ndarray] = {}
        for i, t in enumerate(self.transformers_):
            t_meta, t_arrays = t.get_state()
            meta["transformers"].append(t_meta)
            arrays.update({f"transformer{i}.{k}": v for k, v in t_arrays.items()})
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`get_state` output."""
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(
                f"Unsupported preprocessor state format {meta.get('format')!r}; this version "
                f"reads format {STATE_FORMAT}."
            )
        pre = cls(**meta["params"])
        transformers = []
        for i, t_meta in enumerate(meta["transformers"]):
            t_cls = TRANSFORMERS.get(t_meta["type"])
            if t_cls is None:
                raise ValueError(
                    unknown_name_message("transformer type", t_meta["type"], TRANSFORMERS)
                )
            prefix = f"transformer{i}."
            t_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            transformers.append(t_cls.from_state(t_meta, t_arrays))
        pre.transformers_ = transformers
        pre.label_ = meta["label"]
        pre.input_schema = None
        if meta.get("input_schema") is not None:
            from shardlearn.data import Schema

            pre.input_schema = Schema.from_dict(meta["input_schema"])
        pre._set_outputs()
        return pre

    def _to_artifact(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        meta, arrays = self.get_state()
        return meta, arrays, {}

    @classmethod
    def _from_artifact(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]
    ) -> Preprocessor:
        return cls.from_state(meta, arrays)


def _stack_small(blocks: list[np.ndarray | sp.csr_matrix], rows: int) -> sp.csr_matrix:
    """``sp.hstack([sp.csr_matrix(b) for b in blocks], format="csr", dtype=float32)``, built
    directly: one CSR constructor instead of one per block plus the stacking machinery.

    Each output row holds its non-zeros block after block, in the order each block stores them
    -- row-major non-zeros for a dense block (what ``csr_matrix(dense)`` keeps), the stored
    entries for a CSR block -- exactly what scipy's stack produces. For a few rows scipy's
    per-call overhead was most of a prediction's cost.
    """
    row_parts, column_parts, value_parts = [], [], []
    offset = 0
    for block in blocks:
        if not isinstance(block, np.ndarray):
            csr = block.tocsr()
            row_parts.append(np.repeat(np.arange(rows), np.diff(csr.indptr)))
            column_parts.append(csr.indices.astype(np.int64) + offset)
            value_parts.append(csr.data.astype(np.float32))
        else:
            r, c = np.nonzero(block)
            row_parts.append(r)
            column_parts.append(c + offset)
            value_parts.append(block[r, c].astype(np.float32))
        offset += block.shape[1]
    order = np.argsort(np.concatenate(row_parts), kind="stable")  # rows, blocks kept in order
    counts = np.zeros(rows + 1, dtype=np.int64)
    for part in row_parts:
        counts[1:] += np.bincount(part, minlength=rows)
    nnz = int(counts.sum())
    index_dtype = np.int32 if max(nnz, offset) <= np.iinfo(np.int32).max else np.int64
    return sp.csr_matrix(
        (
            np.concatenate(value_parts)[order],
            np.concatenate(column_parts)[order].astype(index_dtype),
            np.cumsum(counts).astype(index_dtype),
        ),
        shape=(rows, offset),
    )


def read_spec(path: str | Path) -> dict[str, Any]:
    """A preprocessing spec file (YAML, or JSON by its ``.json`` suffix) as a plain dict, for
    :meth:`Preprocessor.from_spec` -- read once, so it can travel to workers as data."""
    spec = _read_spec_file(Path(path))
    if not isinstance(spec, dict):
        raise SpecError(
            f"Preprocessing spec {str(path)!r} must be a mapping (columns: ..., auto: true, "
            f"...); got {type(spec).__name__}."
        )
    return spec


def _read_spec_file(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"Preprocessing spec file {str(path)!r} does not exist.")
    source = f"preprocessing spec {str(path)!r}"
    if path.suffix.lower() != ".json":
        from shardlearn._yaml import read_yaml

        return read_yaml(path, source, SpecError)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SpecError(f"Cannot parse {source}: {exc}") from None


def _width(transformer: ColumnTransformer) -> int:
    """Output features of an unfitted one-column transformer (one-hot: at most top_k + 1)."""
    if isinstance(transformer, TextVectorizer | HashingEncoder):
        return int(transformer.n_features)
    if isinstance(transformer, CategoricalEncoder):
        return int(transformer.top_k) + 1
    if isinstance(transformer, NumericTransformer):
        return 2 if transformer.add_indicator else 1
    if isinstance(transformer, DatetimeEncoder):
        return len(transformer._parts())
    return 1


def _narrowing_hint(name: str, spec: dict[str, Any]) -> str:
    """The spec entry that makes column ``name`` narrower, as inline YAML."""
    if spec.get("kind") == "text":
        return f"columns: {{{name}: {{kind: text, n_features: {COMPACT_TEXT_FEATURES}}}}}"
    if spec.get("kind") == "categorical" and spec.get("encoding") == "hash":
        return f"columns: {{{name}: {{kind: categorical, encoding: hash, n_features: 256}}}}"
    if spec.get("kind") == "categorical":
        return f"columns: {{{name}: {{kind: categorical, top_k: 20}}}}"
    return f"columns: {{{name}: drop}}"


def _subschema(schema: Any, names: list[str]) -> Any:
    from shardlearn.data import Schema

    return Schema(columns=tuple(schema[name] for name in names), label=None)


def _infer_schema(pre: Preprocessor, table: Any) -> Any:
    """The input schema of a preprocessor fitted on an in-memory table."""
    from shardlearn.data import Schema

    spec = _normalise_spec(pre.columns)
    columns = pre.input_columns
    kinds = {name: spec[name]["kind"] for name in columns}
    try:
        return Schema.from_arrow(table.select(columns).schema, kinds=kinds)
    except SchemaError:
        return None  # a column type the data layer cannot name; the schema is informative only
