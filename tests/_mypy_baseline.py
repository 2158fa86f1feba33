"""Run mypy over src/ (config: pyproject's [tool.mypy]) against a per-module error baseline.

``make lint`` and ``make test`` run ``python tests/_mypy_baseline.py``. The baseline
(tests/mypy_baseline.txt, lines of ``<count> <file>``) lists the type errors not fixed yet, per
file, so that mypy can gate new code before every old error is gone. The check fails when a
file has more errors than its baseline (a new error: fix it) and when it has fewer (an error
was fixed: run with ``--update`` to lower the baseline, so it cannot creep back). ``--update``
never raises a count; it writes the first baseline when there is none.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy_baseline.txt"
HEADER = (
    "# mypy errors not fixed yet, per file (tests/_mypy_baseline.py). Counts may only go down:\n"
    "# fix errors, then `.venv/bin/python tests/_mypy_baseline.py --update`.\n"
)
ERROR = re.compile(r"^(?P<file>[^:\n]+\.py):\d+: error: ")


def read_baseline() -> Counter[str]:
    """The baseline's counts; no file means no error is allowed."""
    counts: Counter[str] = Counter()
    if BASELINE.exists():
        for line in BASELINE.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                count, file = line.split(maxsplit=1)
                counts[file] = int(count)
    return counts


def write_baseline(counts: Counter[str]) -> None:
    rows = [f"{counts[file]} {file}" for file in sorted(counts) if counts[file]]
    BASELINE.write_text(HEADER + "\n".join(rows) + ("\n" if rows else ""))


def run_mypy() -> tuple[list[str], int]:
    """mypy's error lines and exit status (2: mypy itself failed)."""
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    if status == 2:
        sys.stderr.write(stdout + stderr)
    return [line for line in stdout.splitlines() if ERROR.match(line)], status


def _file(line: str) -> str:
    match = ERROR.match(line)
    return match["file"] if match else ""


def main(argv: list[str]) -> int:
    errors, status = run_mypy()
    if status == 2:
        return 2
    current = Counter(_file(line) for line in errors)
    baseline = read_baseline()
    worse = sorted(f for f in current if current[f] > baseline[f])
    better = sorted(f for f in baseline if current[f] < baseline[f])
    if worse and BASELINE.exists():
        print("mypy: new type errors (fix them; the baseline only goes down):")
        print("\n".join(line for line in errors if _file(line) in worse))
        for file in worse:
            print(f"  {file}: {current[file]} errors, baseline {baseline[file]}")
        return 1
    if "--update" in argv:
        write_baseline(current)
        print(f"mypy: baseline written, {sum(current.values())} errors in {len(current)} files")
        return 0
    if better:
        print("mypy: fewer errors than the baseline in " + ", ".join(better))
        print("  lower it: .venv/bin/python tests/_mypy_baseline.py --update")
        return 1
    print(f"mypy: no new errors ({sum(current.values())} in the baseline to fix)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
