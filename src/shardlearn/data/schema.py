"""Column kinds and the dataset schema.

A :class:`Schema` is the list of columns a dataset stores, each with a *kind* (how later stages
treat it: numeric, categorical, text, boolean, datetime) and an Arrow *dtype* (how it is
stored). The label is one of the columns; :attr:`Schema.feature_columns` is every other one.

Kinds are inferred from a sample of the input (:func:`infer_schema`) or given explicitly in a
YAML file (:func:`load_schema_file`)::

    label: default
    columns:
      - {name: income, kind: numeric, dtype: float64}
      - {name: purpose, kind: categorical}

A dtype is one of the names of a fixed table (``_DTYPES``) or ``timestamp[UNIT, tz=ZONE]``:
schema files, manifests and model artifacts are untrusted, so a name is never resolved on the
pyarrow module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from shardlearn._validation import unknown_name_message
from shardlearn.exceptions import SchemaError

__all__ = ["KINDS", "Column", "Schema", "infer_kind", "load_schema_file"]

Kind = Literal["numeric", "categorical", "text", "boolean", "datetime"]
KINDS: tuple[Kind, ...] = ("numeric", "categorical", "text", "boolean", "datetime")

# The Arrow type each kind is stored as when a schema file names only the kind.
DEFAULT_DTYPES = {
    "numeric": "float64",
    "categorical": "string",
    "text": "string",
    "boolean": "bool",
    "datetime": "timestamp[us]",
}

# A string column becomes "text" (free text, tokenised later) rather than "categorical" when
# its values are long on average or nearly all distinct; both thresholds are measured on the
# inference sample.
TEXT_MEAN_LENGTH = 24.0
TEXT_DISTINCT_RATIO = 0.5
TEXT_MIN_SAMPLE = 50


@dataclass(frozen=True)
class Column:
    """One column of a dataset.

    Parameters
    ----------
    name : str
        Column name as it appears in the input and in the shards.
    kind : {"numeric", "categorical", "text", "boolean", "datetime"}
        How later stages (preprocessing, models) treat the column.
    dtype : str
        Arrow type name the shards store it as, e.g. ``"float64"``, ``"int64"``, ``"string"``.
    """

    name: str
    kind: Kind
    dtype: str

    def __post_init__(self) -> None:
        as_kind(self.name, self.kind)
        try:
            arrow_type(self.dtype)
        except SchemaError as error:
            raise SchemaError(f"Column {self.name!r}: {error}") from None

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow :class:`pyarrow.DataType` of :attr:`dtype`."""
        return arrow_type(self.dtype)

    def to_dict(self) -> dict[str, str]:
        """JSON-able form: ``{"name": ..., "kind": ..., "dtype": ...}``."""
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype}


@dataclass(frozen=True)
class Schema:
    """The ordered columns of a dataset and the name of its label column.

    Parameters
    ----------
    columns : tuple of Column
        Every stored column, in storage order (the label included).
    label : str or None
        Name of the label column, or None for an unlabelled dataset.

    Examples
    --------
    >>> s = Schema((Column("x", "numeric", "float64"), Column("y", "categorical", "string")), "y")
    >>> [c.name for c in s.feature_columns]
    ['x']
    >>> s["y"].kind
    'categorical'
    """

    columns: tuple[Column, ...]
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        seen: set[str] = set()
        for column in self.columns:
            if column.name in seen:
                raise SchemaError(f"Column {column.name!r} appears twice in the schema.")
            seen.add(column.name)
        if self.label is not None and self.label not in seen:
            raise SchemaError(unknown_name_message("label column", self.label, sorted(seen)))

    @property
    def names(self) -> list[str]:
        """Every column name, in storage order."""
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[Column]:
        """Every column except the label."""
        return [c for c in self.columns if c.name != self.label]

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(unknown_name_message("column", name, self.names))

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def to_arrow(self) -> pa.Schema:
        """The Arrow schema the shards are written with."""
        return pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in ``manifest.json``."""
        return {"columns": [c.to_dict() for c in self.columns], "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Inverse of :meth:`to_dict`."""
        try:
            columns = tuple(
                Column(str(c["name"]), c["kind"], str(c.get("dtype") or DEFAULT_DTYPES[c["kind"]]))
                for c in data["columns"]
            )
        except (KeyError, TypeError) as error:
            raise SchemaError(f"Invalid schema description: missing {error}.") from None
        return cls(columns, data.get("label"))

    @classmethod
    def from_arrow(
        cls,
        schema: pa.Schema,
        label: str | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> Schema:
        """Build a schema from an Arrow schema, inferring kinds from the types.

        String columns become ``categorical`` unless ``kinds`` says otherwise.
        """
        kinds = dict(kinds or {})
        columns = []
        for field in schema:
            given = kinds.get(field.name)
            kind = as_kind(field.name, given) if given else kind_of_type(field.type)
            columns.append(Column(field.name, kind, type_name(field.type)))
        return cls(tuple(columns), label)

    def with_label(self, label: str | None) -> Schema:
        """A copy with another label column."""
        return Schema(self.columns, label)


# Every dtype name a schema may hold, and the Arrow type it stands for. A name read from a file
# (manifest.json, model.json, a --schema YAML) is looked up here and nowhere else: resolving it
# with getattr(pyarrow, name) would let the file call any pyarrow function.
_DTYPES: dict[str, Callable[[], pa.DataType]] = {
    "int8": pa.int8,
    "int16": pa.int16,
    "int32": pa.int32,
    "int64": pa.int64,
    "uint8": pa.uint8,
    "uint16": pa.uint16,
    "uint32": pa.uint32,
    "uint64": pa.uint64,
    "float16": pa.float16,
    "halffloat": pa.float16,
    "float32": pa.float32,
    "float64": pa.float64,
    "float": pa.float64,
    "double": pa.float64,
    "string": pa.string,
    "str": pa.string,
    "utf8": pa.string,
    "large_string": pa.string,
    "bool": pa.bool_,
    "bool_": pa.bool_,
    "boolean": pa.bool_,
    "date32": pa.date32,
    "date32[day]": pa.date32,
    "date64": pa.date64,
    "date64[ms]": pa.date64,
    "binary": pa.binary,
    "large_binary": pa.large_binary,
    "null": pa.null,
}
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, *tz=([A-Za-z0-9_+\-/:]{1,64}))?\]\Z")


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type of a dtype name such as ``"float64"`` or ``"timestamp[us, tz=UTC]"``.

    Only the names of a fixed table (integers, floats, string, bool, dates, binary, null) and
    ``timestamp[UNIT]`` / ``timestamp[UNIT, tz=ZONE]`` are accepted.
    """
    if not isinstance(name, str):
        raise SchemaError(f"Unknown dtype {name!r}; a dtype is a type name such as 'float64'.")
    text = name.strip()
    factory = _DTYPES.get(text)
    if factory is not None:
        return factory()
    match = _TIMESTAMP.match(text)
    if match is None:
        raise SchemaError(
            f"Unknown dtype {text[:80]!r}; use one of {', '.join(sorted(_DTYPES))} or "
            "timestamp[s|ms|us|ns] (optionally timestamp[us, tz=UTC])."
        )
    try:
        return pa.timestamp(match.group(1), tz=match.group(2))
    except (ValueError, pa.ArrowException):
        raise SchemaError(f"Unknown time zone in dtype {text!r}.") from None


def type_name(dtype: pa.DataType) -> str:
    """Canonical name of an Arrow type (``large_string`` and ``string`` both -> ``string``)."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_dictionary(dtype):
        return type_name(dtype.value_type)
    canonical = {"double": "float64", "float": "float32", "halffloat": "float16"}
    text = str(dtype)
    return canonical.get(
        text, text.replace("date32[day]", "date32").replace("date64[ms]", "date64")
    )


def as_kind(column: str, kind: str) -> Kind:
    """``kind`` (read from a schema file or a ``kinds`` option) as a column kind, or a
    SchemaError naming the kinds."""
    if kind in KINDS:
        return kind
    raise SchemaError(
        f"Column {column!r} has unknown kind {kind!r}; use one of {', '.join(KINDS)}."
    )


def kind_of_type(dtype: pa.DataType) -> Kind:
    """The default kind for an Arrow type."""
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if pa.types.is_temporal(dtype):
        return "datetime"
    if pa.types.is_dictionary(dtype):
        return "categorical"
    return "categorical"


def infer_kind(values: pa.Array | pa.ChunkedArray) -> Kind:
    """Kind of a sampled column: string columns are ``text`` or ``categorical``.

    A string column is ``text`` when its values are long on average (free text) or nearly all
    distinct on a large enough sample; otherwise it is ``categorical``.
    """
    dtype = values.type
    if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
        return kind_of_type(dtype)
    present = pc.drop_null(values)
    if len(present) == 0:
        return "categorical"
    mean_length = pc.mean(pc.utf8_length(present)).as_py() or 0.0
    distinct_ratio = len(pc.unique(present)) / len(present)
    has_spaces = pc.any(pc.match_substring(present, " ")).as_py()
    if mean_length >= TEXT_MEAN_LENGTH and has_spaces:
        return "text"
    if len(present) >= TEXT_MIN_SAMPLE and distinct_ratio > TEXT_DISTINCT_RATIO and has_spaces:
        return "text"
    return "categorical"


def load_schema_file(path: str | Path, names: Iterable[str] | None = None) -> Schema:
    """Read a schema from a YAML (or JSON) file.

    The file holds ``columns:`` (a list of ``{name, kind, dtype}``; ``dtype`` may be omitted)
    and optionally ``label:``. When ``names`` is given (the input's header), every input column
    must be listed.
    """
    from shardlearn._yaml import read_yaml

    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"Schema file {str(path)!r} does not exist.")
    data = read_yaml(path, f"schema file {str(path)!r}", SchemaError)
    if not isinstance(data, dict) or not isinstance(data.get("columns"), list):
        raise SchemaError(
            f"Schema file {str(path)!r} must be a mapping with a 'columns' list of "
            "{name, kind, dtype} entries."
        )
    schema = Schema.from_dict(data)
    if names is not None:
        missing = [n for n in names if n not in schema]
        if missing:
            raise SchemaError(
                f"Schema file {str(path)!r} does not describe input column(s) "
                f"{', '.join(map(repr, missing))}."
            )
    return schema
