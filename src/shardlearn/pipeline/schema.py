"""The published JSON schema of a pipeline spec, generated from the option models.

``spec.schema.json`` (shipped in the package, printed by ``shardlearn run --schema``, the
source of the docs' spec reference) is written by::

    python -m shardlearn.pipeline.schema

from :class:`~shardlearn.pipeline.options.PipelineDocument`; a test fails when the committed
file differs from what this module generates, so it is never edited by hand.

The schema describes the YAML file as written, before ``${name}`` variables are substituted,
so every key that does not take a string also takes a ``${variable}`` (``partitions: ${n}``).
pydantic's per-field titles are dropped (the key is its own title); the models' titles
(``ingest stage``) and every description, default, range and choice stay.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from shardlearn.pipeline.options import PipelineDocument

__all__ = ["SCHEMA_FILE", "generate_schema", "main", "schema_text"]

SCHEMA_FILE = "spec.schema.json"
_NO_VARIABLE = ("stages", "vars")  # substitution happens inside them, not for them
_VARIABLE = {
    "type": "string",
    "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$",
    "description": "a ${variable}",
}


def generate_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a pipeline spec."""
    schema = PipelineDocument.model_json_schema()
    defs = schema.pop("$defs", {})
    for model in [schema, *defs.values()]:
        model["properties"] = {
            key: _untitled(value) if key in _NO_VARIABLE else _variable_allowed(_untitled(value))
            for key, value in model["properties"].items()
        }
    defs["variable"] = _VARIABLE
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "$defs": defs}


def _untitled(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "title"}


def _takes_string(node: dict[str, Any]) -> bool:
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        return True
    return any(_takes_string(a) for a in node.get("anyOf", []) + node.get("oneOf", []))


def _variable_allowed(node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or ``node`` or a ``${variable}`` when it does not already take any string."""
    if _takes_string(node) or "const" in node:
        return node
    outer: dict[str, Any] = {k: node.pop(k) for k in ("default", "description") if k in node}
    return {"anyOf": [node, {"$ref": "#/$defs/variable"}], **outer}


def schema_text() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(generate_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema into the package (``--check``: exit 1 when the file is stale)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(str(resources.files("shardlearn.pipeline").joinpath(SCHEMA_FILE)))
    text = schema_text()
    if "--check" in args:
        stale = target.read_text() != text
        print(f"{target} is {'stale' if stale else 'up to date'}")
        return int(stale)
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
