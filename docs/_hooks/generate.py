"""mkdocs hook: pages whose text comes from the code, so they cannot go stale.

A page holds a marker comment and the hook replaces it at build time:

``<!-- generate: cli -->``
    every command of the ``shardlearn`` typer app (through click), with its usage, help and
    options;
``<!-- generate: pipeline-schema -->``
    the pipeline YAML keys and every stage type, from ``pipeline/spec.schema.json``.

An unknown marker fails the build (``mkdocs build --strict`` runs in ``make test``).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

_MARKER = re.compile(r"<!--\s*generate:\s*([\w-]+)\s*-->")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace every ``generate`` marker of a page with its generated Markdown."""
    return _MARKER.sub(lambda match: _generate(match[1], page.file.src_uri), markdown)


def _generate(name: str, where: str) -> str:
    if name == "cli":
        return cli_markdown()
    if name == "pipeline-schema":
        return schema_markdown()
    raise ValueError(f"{where}: unknown generate marker {name!r}; use cli or pipeline-schema")


# -- the CLI --------------------------------------------------------------------------------------


def cli_markdown() -> str:
    """Markdown for every command of the ``shardlearn`` app, depth first in help order."""
    import typer

    from shardlearn.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []
    _command(root, "shardlearn", None, out, level=2)
    return "\n".join(out)


def _command(command: Any, path: str, parent: Any, out: list[str], level: int) -> None:
    # Duck-typed click objects: typer may build them on its own copy of click.
    ctx = command.context_class(command, info_name=path.split()[-1], parent=parent)
    out.append(f"{'#' * level} `{path}`\n")
    if command.help:
        out.append(_clean(command.help) + "\n")
    out.append(f"```text\n{ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}\n```\n")
    rows = [_param_row(param, ctx) for param in command.get_params(ctx)]
    rows = [row for row in rows if row]
    if rows:
        out.append("| argument or option | meaning |\n|---|---|")
        out.extend(rows)
        out.append("")
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                _command(sub, f"{path} {name}", ctx, out, min(level + 1, 4))


def _param_row(param: Any, ctx: Any) -> str:
    if getattr(param, "hidden", False) or param.name == "help":
        return ""
    record = param.get_help_record(ctx) if param.param_type_name == "option" else None
    if record:
        names, help_text = record
    else:  # an argument: its metavar and its help
        names = param.make_metavar(ctx) if hasattr(param, "make_metavar") else param.name
        names, help_text = names, getattr(param, "help", None) or ""
        if param.required:
            help_text = f"{help_text} [required]".strip()
    return f"| `{_cell(names)}` | {_cell(_clean(help_text))} |"


def _clean(text: str) -> str:
    return text.replace("\b\n", "").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- the pipeline spec schema ---------------------------------------------------------------------


def schema_markdown() -> str:
    """Markdown for the pipeline spec: top-level keys, then one table per stage type."""
    text = resources.files("shardlearn.pipeline").joinpath("spec.schema.json").read_text()
    schema = json.loads(text)
    out = ["## Top-level keys\n", _keys_table(schema, schema)]
    stages = schema["properties"]["stages"]["additionalProperties"]
    for stage in _alternatives(stages, schema):
        kind = stage.get("properties", {}).get("type", {}).get("const", stage.get("title", "?"))
        out.append(f"## `type: {kind}`\n")
        if stage.get("description"):
            out.append(stage["description"] + "\n")
        properties = {k: v for k, v in stage.get("properties", {}).items() if k != "type"}
        out.append(_keys_table({**stage, "properties": properties}, schema))
    return "\n".join(out)


def _alternatives(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    for key in ("oneOf", "anyOf"):
        if key in node:
            return [_resolve(item, root) for item in node[key]]
    return [node]


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _keys_table(node: dict[str, Any], root: dict[str, Any]) -> str:
    required = set(node.get("required", []))
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, value in node.get("properties", {}).items():
        description = _resolve(value, root).get("description", value.get("description", ""))
        default = "required" if key in required else _default(value)
        rows.append(
            f"| `{key}` | {_cell(_type(value, root))} | {_cell(default)} | {_cell(description)} |"
        )
    return "\n".join(rows) + "\n"


_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or node["default"] is None:
        return ""
    return f"`{json.dumps(node['default'])}`"


def _type(node: dict[str, Any], root: dict[str, Any], depth: int = 0) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return "`${var}`" if name == "variable" else name
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node and depth < 4:  # null: the key's default (shown in its own column)
            shown = [item for item in node[key] if item.get("type") != "null"]
            return " or ".join(_type(item, root, depth + 1) for item in shown)
    kind = node.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in node and depth < 4:
        return f"list of {_type(node['items'], root, depth + 1)}"
    bounds = [f"{sign} {node[key]:g}" for key, sign in _BOUNDS if key in node]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")
