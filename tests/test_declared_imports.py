"""Every third-party import of ``src/shardlearn`` is declared in pyproject.toml, and the package
imports with only the core dependencies: a module that needs an extra imports it lazily, or fails
with one line naming ``shardlearn[<extra>]``.

The optional packages are read from pyproject's extras (with what they pull in, minus what the
core dependencies pull in); a subprocess blocks them with a meta-path finder and imports every
module of the package. The report (module, blocked package, extra) is printed.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "shardlearn"
# Extras of tools around the package, not of the package's own code.
NOT_RUNTIME_EXTRAS = {"dev", "docs", "bench", "all"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extras() -> dict[str, list[Requirement]]:
    extras = _pyproject()["optional-dependencies"]
    return {
        name: [Requirement(r) for r in reqs]
        for name, reqs in extras.items()
        if name not in NOT_RUNTIME_EXTRAS
    }


def _core() -> list[Requirement]:
    return [Requirement(r) for r in _pyproject()["dependencies"]]


@cache
def _modules_of() -> dict[str, set[str]]:
    """Canonical distribution name -> its top-level import names (installed distributions)."""
    out: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            out.setdefault(canonicalize_name(dist), set()).add(module)
    return out


def _closure(requirements: list[Requirement]) -> set[str]:
    """The canonical names of these distributions and everything installed they require."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if canonicalize_name(name) in seen and not extras:
            continue
        seen.add(key[0])
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras | {""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                if canonicalize_name(req.name) not in seen or req.extras:
                    todo.append((req.name, frozenset(req.extras)))
    return seen


def _optional_modules() -> dict[str, set[str]]:
    """Top-level module -> the extras that bring it, for modules the core does not bring.

    The extras that declare the module's distribution themselves when there are any (fastapi:
    serve, not mlflow, which pulls it in too); else every extra that pulls it in.
    """
    modules_of = _modules_of()
    core = {m for dist in _closure(_core()) for m in modules_of.get(dist, ())}
    direct: dict[str, set[str]] = {}
    pulled: dict[str, set[str]] = {}
    for extra, reqs in _extras().items():
        for dist in _closure(reqs):
            for module in modules_of.get(dist, set()) - core:
                pulled.setdefault(module, set()).add(extra)
        for req in reqs:
            for module in modules_of.get(canonicalize_name(req.name), set()) - core:
                direct.setdefault(module, set()).add(extra)
    return {module: direct.get(module, extras) for module, extras in pulled.items()}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the source files importing it (static, every branch)."""
    # _typeshed: the standard library's typing stubs (imported under TYPE_CHECKING only).
    local = {"shardlearn", "_typeshed"} | set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in local:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = {canonicalize_name(r.name) for r in _core()}
    declared |= {canonicalize_name(r.name) for reqs in _extras().values() for r in reqs}
    providers = metadata.packages_distributions()
    undeclared = {
        module: sorted(files)
        for module, files in _third_party_imports().items()
        if not {canonicalize_name(d) for d in providers.get(module, [])} & declared
    }
    assert not undeclared, (
        "imported but not declared in pyproject.toml's dependencies or runtime extras "
        f"(module: files): {undeclared}"
    )


# Runs in a fresh interpreter: block the optional modules, import every shardlearn module,
# print one JSON line per module.
_IMPORT_ALL = """
import importlib, json, sys, traceback
blocked = set(json.loads(sys.argv[1]))
modules = json.loads(sys.argv[2])
attempts = []

class Blocker:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in blocked:
            attempts.append(top)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
for module in modules:
    attempts.clear()
    try:
        importlib.import_module(module)
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"module": module, "error": error, "blocked": sorted(set(attempts))}))
"""


def _all_modules() -> list[str]:
    names = ["shardlearn"]
    for info in pkgutil.walk_packages([str(SRC)], prefix="shardlearn."):
        names.append(info.name)
    return sorted(names)


def test_every_module_imports_with_only_the_core_dependencies() -> None:
    optional = _optional_modules()
    assert {"torch", "fastapi", "ray", "optuna"} <= set(optional), optional  # the blocker works
    args = [json.dumps(sorted(optional)), json.dumps(_all_modules())]
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == len(_all_modules()), run.stderr
    report, wrong = [], []
    for row in rows:
        if row["error"] is None:
            continue
        extras = sorted({e for m in row["blocked"] for e in optional[m]})
        report.append(f"{row['module']}: needs {', '.join(row['blocked'])} -> {extras}")
        named = any(re.search(rf"shardlearn\[{e}\]", row["error"]) for e in extras)
        if not row["blocked"] or not named or "\n" in row["error"]:
            wrong.append(f"{row['module']}: {row['error']!r} (extras: {extras})")
    print("modules that need an extra to import:\n" + "\n".join(report or ["(none)"]))
    lazy = [
        f"{path}: {module} -> {sorted(optional[module])}"
        for module, paths in sorted(_third_party_imports().items())
        if module in optional
        for path in sorted(paths)
    ]
    print("optional packages imported (at import or on use):\n" + "\n".join(lazy))
    assert not wrong, (
        "these modules fail to import with only the core dependencies, and the error does not "
        "name the extra to install in one line (import the package lazily, or raise "
        "ImportError(\"... pip install 'shardlearn[<extra>]'\")):\n" + "\n".join(wrong)
    )
