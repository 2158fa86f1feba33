"""pytest set-up for the docstring examples of ``src/shardlearn``, which ``make test`` runs as
doctests (``--doctest-modules`` and ``src/shardlearn`` in pyproject's ``testpaths``).

Each example runs in its own empty temporary directory, so it writes ``data/loans`` or
``models/...`` as a user would, and leaves nothing behind. A module whose examples need an
optional extra is not collected when that extra is missing (the regular tests skip the same
way with ``pytest.importorskip``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

SRC = Path(__file__).resolve().parent / "src" / "shardlearn"

# Modules (or packages) of src/shardlearn whose examples import an optional extra: the import
# names they need. The examples of every other module run with the core dependencies alone.
NEEDS = {
    "models/neural_network": ("torch",),
    "registry/mlflow.py": ("mlflow",),
    "registry/onnx.py": ("onnx", "onnxruntime"),
    "serve": ("fastapi", "uvicorn"),
    "serve/ray_serve.py": ("ray",),
}


def _missing(path: Path) -> list[str]:
    relative = path.relative_to(SRC).as_posix()
    needed = [
        name
        for prefix, names in NEEDS.items()
        if relative == prefix or relative.startswith(prefix + "/")
        for name in names
    ]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Leave out the modules whose examples need an extra that is not installed."""
    if collection_path.suffix != ".py" or SRC not in collection_path.parents:
        return None
    return True if _missing(collection_path) else None


@pytest.fixture(autouse=True)
def _doctest_directory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each docstring example in a fresh temporary directory (other tests are untouched)."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
