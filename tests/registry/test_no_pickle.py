"""No code path in shardlearn may unpickle: artifacts must be safe to load from strangers."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# Direct unpickling calls. torch.load is allowed only with weights_only=True on the same call.
FORBIDDEN = re.compile(
    r"\b(pickle|cPickle|_pickle|joblib|cloudpickle|dill)\s*\.\s*loads?\s*\("
    r"|\bUnpickler\s*\("
    r"|\bnp\.load\s*\([^)]*allow_pickle\s*=\s*True"
    r"|\bpd\.read_pickle\s*\("
)
TORCH_LOAD = re.compile(r"\btorch\s*\.\s*load\s*\((?P<args>[^)]*)\)", re.DOTALL)


def scan(text: str) -> list[str]:
    """The offending calls in one source text."""
    found = [m.group(0) for m in FORBIDDEN.finditer(text)]
    found += [
        m.group(0)
        for m in TORCH_LOAD.finditer(text)
        if not re.search(r"weights_only\s*=\s*True", m.group("args"))
    ]
    return found


def test_the_scanner_catches_what_it_should():
    assert scan("obj = pickle.load(f)") == ["pickle.load("]
    assert scan("x = cloudpickle.loads(b)") == ["cloudpickle.loads("]
    assert scan("m = joblib.load('m.joblib')") == ["joblib.load("]
    assert scan("state = torch.load(path)") == ["torch.load(path)"]
    assert scan("state = torch.load(\n    path, map_location='cpu'\n)") != []
    assert scan("state = torch.load(path, weights_only=True)") == []
    assert scan("a = np.load(f, allow_pickle=True)") != []
    assert scan("a = np.load(f, allow_pickle=False)") == []


def test_no_unpickling_anywhere_in_src():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for call in scan(path.read_text(encoding="utf-8")):
            offenders.append(f"{path.relative_to(SRC)}: {call}")
    assert offenders == [], "unpickling in src/ (use safe formats instead):\n" + "\n".join(
        offenders
    )
