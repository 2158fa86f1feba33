"""Drawings of a pipeline's graph: Mermaid and Graphviz DOT text, PNG through Graphviz."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from shardlearn.exceptions import ShardlearnError
from shardlearn.pipeline.spec import PipelineSpec

__all__ = ["FORMATS", "draw"]

FORMATS = ("mermaid", "dot", "png")


def _label(spec: PipelineSpec, name: str) -> str:
    stage = spec.stages[name]
    detail = stage.options.get("model") if stage.type == "train" else None
    return f"{name}\\n{stage.type}" + (f": {detail}" if detail else "")


def to_mermaid(spec: PipelineSpec) -> str:
    """The graph as a Mermaid flowchart (paste into Markdown on GitHub)."""
    lines = ["flowchart LR"]
    for name in spec.stages:
        lines.append(f'    {name}["{_label(spec, name).replace(chr(92) + "n", "<br/>")}"]')
    for name, stage in spec.stages.items():
        for dep in spec.dependencies(stage):
            lines.append(f"    {dep} --> {name}")
    return "\n".join(lines) + "\n"


def to_dot(spec: PipelineSpec) -> str:
    """The graph in Graphviz DOT."""
    lines = [f'digraph "{spec.name}" {{', "    rankdir=LR;", "    node [shape=box, style=rounded];"]
    for name in spec.stages:
        lines.append(f'    "{name}" [label="{_label(spec, name)}"];')
    for name, stage in spec.stages.items():
        for dep in spec.dependencies(stage):
            lines.append(f'    "{dep}" -> "{name}";')
    return "\n".join(lines) + "\n}\n"


def draw(spec: PipelineSpec, fmt: str, out: Path | None = None) -> str | Path:
    """Text for ``mermaid``/``dot``; for ``png``, the written file (needs Graphviz's ``dot``)."""
    if fmt == "mermaid":
        return to_mermaid(spec)
    if fmt == "dot":
        return to_dot(spec)
    if fmt != "png":
        raise ShardlearnError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    dot = shutil.which("dot")
    if dot is None:
        raise ShardlearnError(
            "PNG output needs Graphviz's 'dot' program, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz). --format mermaid or dot work without it."
        )
    target = out or Path(f"{spec.name}.png")
    subprocess.run([dot, "-Tpng", "-o", str(target)], input=to_dot(spec).encode(), check=True)
    return target
