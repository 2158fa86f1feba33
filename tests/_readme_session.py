"""The Python interpreter behind ``tests/_readme_runner.py``: README snippets in one namespace.

Reads ``LINE<TAB>PATH`` lines on stdin, runs the code in PATH in one shared namespace named
``__main__`` (as a notebook would), prints its output and any traceback, then one
``@@readme-block-done@@ ok|error`` line. The Markdown file (argv[1]) is put in ``linecache`` so
a traceback shows the README's own lines.
"""

from __future__ import annotations

import linecache
import sys
import traceback
from pathlib import Path

DONE_MARKER = "@@readme-block-done@@"


def main() -> None:
    """Run snippets until stdin closes."""
    source = Path(sys.argv[1])
    text = source.read_text()
    linecache.cache[source.name] = (len(text), None, text.splitlines(True), source.name)
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.path.insert(0, ".")
    for request in sys.stdin:
        _line, path = request.rstrip("\n").split("\t", 1)
        code = Path(path).read_text()
        status = "ok"
        try:
            exec(compile(code, source.name, "exec"), namespace)  # noqa: S102 - the README's code
        except BaseException:  # noqa: BLE001 - any failure of a snippet is reported, not raised
            traceback.print_exc(file=sys.stdout)
            status = "error"
        sys.stdout.flush()
        sys.stderr.flush()
        print(f"\n{DONE_MARKER} {status}", flush=True)


if __name__ == "__main__":
    main()
