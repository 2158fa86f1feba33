"""Run every shell command and Python snippet of a Markdown file, in order, as a user would.

The README's and the docs pages' commands are tests (issues #22, #25):
``tests/test_readme_commands.py`` feeds README.md and each page of ``docs/`` to
:func:`run_markdown`, which runs its fenced blocks top to bottom in one scratch folder, and
fails with the command (or snippet), its file's line and its output when one fails.

What runs
    ``bash``/``sh``/``shell`` blocks: each command (a line, with its ``\\`` continuations and
    any quote that spans lines) runs in bash with ``set -e`` semantics per command; shell
    variables, exported ones and the current directory carry over to the next command, as in
    one terminal session. ``python``/``py`` blocks run in one long-lived interpreter (one
    namespace, like a notebook), so a snippet may use what an earlier one defined. Blocks of
    any other language (YAML, JSON, output, layouts) are text and do not run.

Directives (an HTML comment on the line(s) just before a block; invisible on GitHub)
    ``<!-- readme: skip (reason) -->``
        do not run the next block; the reason is required and the summary lists it. For
        benchmarks, cluster set-up, ``make demo``/``make test`` themselves, ``pip install``.
    ``<!-- readme: file NAME -->``
        write the next block to NAME in the scratch folder (a ``space.yaml`` the text asks
        the reader to save), so later commands can use it.
    ``<!-- readme: given`` ... ``-->``
        code the reader is assumed to have (arrays ``X, y``, their own worker functions),
        run just before the next block in its language and shown nowhere.
    Anything else after ``readme:`` is an error, so a typo cannot silently skip a block.

Servers
    A ``shardlearn serve`` command (not ``serve token``) starts in the background in its own
    process group, with ``--port`` rewritten to a free port (every later ``:PORT`` in the run
    follows); the runner polls ``/readyz`` until it answers 200 (never a fixed sleep) and stops
    every server when the run ends, pass or fail.

Small data
    The runner sets ``SHARDLEARN_DEMO_ROWS`` (the default of ``shardlearn demo --rows``) to a
    few thousand rows and ``SHARDLEARN_WORKERS=2`` (``workers=`` of :func:`run_markdown`: 1 for
    a page that does not teach workers, so its commands run in-process and start no worker
    interpreter); the README's own commands then run on small data. The folder next to the
    Markdown file's ``examples/`` is copied into the scratch folder, as a user's clone has it.

Timing
    Every command and snippet is timed (wall seconds, and CPU seconds of its own processes: the
    shell's children for a command, the interpreter for a snippet), so pages can run side by
    side; :meth:`RunReport.summary` lists the slowest.

Run by hand: ``python -m tests._readme_runner README.md [--keep DIR]``; a docs page other than
the getting-started page runs on a copy of that page's folder:
``python -m tests._readme_runner docs/getting-started.md --keep /tmp/tour`` once, then
``python -m tests._readme_runner docs/tutorials/search.md --base /tmp/tour``.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGS = frozenset({"bash", "sh", "shell"})
PYTHON_LANGS = frozenset({"python", "py"})
DEMO_ROWS = 3000
COMMAND_TIMEOUT = 300.0
SERVER_READY_TIMEOUT = 60.0
OUTPUT_TAIL_LINES = 60
SLOWEST_SHOWN = 5  # commands or snippets the summary lists with their times
SESSION_SCRIPT = Path(__file__).with_name("_readme_session.py")
REPOSITORY = Path(__file__).resolve().parents[1]
DONE_MARKER = "@@readme-block-done@@"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n]*$")
_DIRECTIVE = re.compile(r"<!--\s*readme:(?P<body>.*?)-->", re.DOTALL)
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]+)\)$")
_FILE = re.compile(r"^file\s+(?P<name>[\w.\-/]+)$")
_SERVE = re.compile(r"^shardlearn\s+serve(?!\s+token)(\s|$)")
_PORT_OPTION = re.compile(r"--port[ =](\d+)")


class ReadmeCommandError(AssertionError):
    """A README command or snippet failed; the message has its line, text and output."""


@dataclass
class Block:
    """One fenced block of the Markdown file and the directive that precedes it."""

    line: int  # 1-based line of the block's first code line
    lang: str
    code: str
    skip: str | None = None
    file: str | None = None
    given: str | None = None

    @property
    def kind(self) -> str:
        """``skip``, ``file``, ``shell``, ``python`` or ``text``."""
        if self.skip is not None:
            return "skip"
        if self.file is not None:
            return "file"
        if self.lang in SHELL_LANGS:
            return "shell"
        if self.lang in PYTHON_LANGS:
            return "python"
        return "text"


@dataclass
class Timing:
    """One command's or snippet's wall and CPU seconds (CPU: its processes and their children)."""

    line: int
    label: str
    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:6.1f} s wall {self.cpu:6.1f} s CPU  line {self.line}: {self.label}"


@dataclass
class RunReport:
    """What a run did: counts, skipped blocks with their reasons, each command's seconds."""

    ran: list[Block] = field(default_factory=list)
    skipped: list[Block] = field(default_factory=list)
    files: list[Block] = field(default_factory=list)
    text: list[Block] = field(default_factory=list)
    commands: int = 0
    seconds: float = 0.0
    timings: list[Timing] = field(default_factory=list)

    def summary(self, slowest: int = SLOWEST_SHOWN) -> str:
        """A few lines for the test log: counts, skipped blocks, the slowest commands."""
        lines = [
            f"README run: {len(self.ran)} blocks ran ({self.commands} shell commands), "
            f"{len(self.skipped)} skipped, {len(self.files)} written as files, "
            f"{len(self.text)} text blocks, {self.seconds:.1f} s"
        ]
        lines += [f"  skipped line {b.line}: {b.skip}" for b in self.skipped]
        ranked = sorted(self.timings, key=lambda timing: timing.wall, reverse=True)
        lines += [f"  {timing}" for timing in ranked[:slowest]]
        return "\n".join(lines)


# -- parsing -----------------------------------------------------------------------------------


def _directive(body: str, line: int) -> tuple[str, str]:
    """``(kind, value)`` of one ``readme:`` comment; refuses anything unknown."""
    text = body.strip()
    if text.startswith("given"):
        return "given", text[len("given") :].strip("\n")
    if match := _SKIP.match(text):
        return "skip", match["reason"].strip()
    if match := _FILE.match(text):
        return "file", match["name"]
    raise ValueError(
        f"line {line}: unknown README directive {text[:60]!r}; use "
        "'skip (reason)', 'file NAME' or 'given' followed by code"
    )


def parse_markdown(text: str) -> list[Block]:
    """Every fenced block of ``text`` with the directives just before it, in order."""
    lines = text.split("\n")
    blocks: list[Block] = []
    pending: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("<!--") and "readme:" in line:
            end = index
            while "-->" not in lines[end] and end + 1 < len(lines):
                end += 1
            match = _DIRECTIVE.search("\n".join(lines[index : end + 1]))
            if match is None:
                raise ValueError(f"line {index + 1}: unclosed README directive")
            kind, value = _directive(match["body"], index + 1)
            if kind in pending:
                raise ValueError(f"line {index + 1}: two '{kind}' directives for one block")
            pending[kind] = value
            index = end + 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending:
                raise ValueError(
                    f"line {index + 1}: a README directive must come just before a fenced block"
                )
            index += 1
            continue
        indent, marker = fence["indent"], fence["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(marker):
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        blocks.append(
            Block(
                line=index + 2,
                lang=fence["lang"].lower(),
                code="\n".join(body) + "\n",
                skip=pending.get("skip"),
                file=pending.get("file"),
                given=pending.get("given"),
            )
        )
        pending = {}
        index = end + 1
    return blocks


def shell_commands(code: str, first_line: int) -> Iterator[tuple[int, str]]:
    """``(README line, command)`` for each command of a shell block.

    A command is a line plus its ``\\`` continuations and any quote left open; comment-only
    and blank lines are not commands.
    """
    pending: list[str] = []
    start = first_line
    for offset, line in enumerate(code.split("\n")):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = first_line + offset
        pending.append(line)
        joined = "\n".join(pending)
        if joined.endswith("\\"):
            continue
        try:
            shlex.split(joined, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        yield start, joined
        pending = []
    if pending:
        yield start, "\n".join(pending)


# -- running -----------------------------------------------------------------------------------


def _tail(output: str) -> str:
    lines = output.rstrip().split("\n")
    cut = len(lines) - OUTPUT_TAIL_LINES
    shown = lines[-OUTPUT_TAIL_LINES:]
    return "\n".join(([f"... ({cut} lines before)"] if cut > 0 else []) + shown)


def _seconds(value: str) -> float:
    """``1m2.500s`` (bash's ``times``) -> 62.5."""
    minutes, _, seconds = value.rstrip("s").partition("m")
    return 60 * float(minutes) + float(seconds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ShellSession:
    """Shell commands run one by one, keeping variables and the directory between them."""

    def __init__(self, workdir: Path, env: dict[str, str], source: str) -> None:
        self.record: Callable[[Timing], None] = lambda timing: None
        self.workdir = workdir
        self.env = env
        self.source = source
        self.state = workdir / ".readme-shell"
        if not self.state.is_dir():
            self.state.mkdir()
            (self.state / "pwd").write_text(str(workdir))
            (self.state / "vars.sh").write_text("")
        self.servers: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, str] = {}  # port in the README -> port of this run

    def _script(self, command: str) -> str:
        # set -a exports every assignment, so `TOKEN=$(...)` reaches the next command.
        state = shlex.quote(str(self.state))
        return (
            f'set -a\n. {state}/vars.sh\ncd "$(cat {state}/pwd)"\n{command}\n'
            f"__readme_rc=$?\nexport -p > {state}/vars.sh\npwd > {state}/pwd\n"
            f"times > {state}/times\nexit $__readme_rc\n"
        )

    def _cpu(self) -> float:
        """CPU seconds of the last command's processes (bash's ``times``: its children's line).

        Per command, so pages run side by side do not count each other's work.
        """
        try:
            children = (self.state / "times").read_text().split("\n")[1].split()
            (self.state / "times").unlink()
        except (OSError, IndexError):
            return 0.0  # a server (still running) or a command that ended the shell
        return sum(_seconds(value) for value in children)

    def _with_ports(self, command: str) -> str:
        for readme_port, port in self.ports.items():
            command = re.sub(rf"(?<=[:= ]){readme_port}\b", port, command)
        return command

    def run(self, line: int, command: str) -> None:
        """Run one command; a non-zero exit raises :class:`ReadmeCommandError`."""
        started = time.monotonic()
        try:
            self._run(line, command)
        finally:
            wall = time.monotonic() - started
            self.record(Timing(line, command.splitlines()[0], wall, self._cpu()))

    def _run(self, line: int, command: str) -> None:
        if _SERVE.match(command.strip()):
            self._start_server(line, command)
            return
        command = self._with_ports(command)
        try:
            done = subprocess.run(
                ["bash", "-c", self._script(command)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            output = (error.stdout or b"").decode(errors="replace")
            raise ReadmeCommandError(
                f"{self.source}:{line}: `{command}` did not finish in {COMMAND_TIMEOUT:.0f} s:"
                f"\n{_tail(output)}"
            ) from None
        if done.returncode != 0:
            raise ReadmeCommandError(
                f"{self.source}:{line}: `{command}` exited with {done.returncode}:\n"
                f"{_tail(done.stdout.decode(errors='replace'))}"
            )

    def _start_server(self, line: int, command: str) -> None:
        port = str(_free_port())
        match = _PORT_OPTION.search(command)
        readme_port = match.group(1) if match else "8000"
        self.ports[readme_port] = port
        command = (
            _PORT_OPTION.sub(f"--port {port}", command)
            if match
            else _SERVE.sub(f"shardlearn serve --port {port} ", command.strip(), count=1)
        )
        log = self.state / f"server-{port}.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                ["bash", "-c", f"exec {command}" if "\n" not in command else command],
                cwd=Path((self.state / "pwd").read_text().strip()),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.servers.append(server)
        url = f"http://127.0.0.1:{port}/readyz"
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise ReadmeCommandError(
                    f"{self.source}:{line}: server `{command}` exited with {server.returncode}"
                    f":\n{_tail(log.read_text(errors='replace'))}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            try:  # the poll interval: returns early if the server exits
                server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        raise ReadmeCommandError(
            f"{self.source}:{line}: server `{command}` was not ready at {url} after "
            f"{SERVER_READY_TIMEOUT:.0f} s:\n{_tail(log.read_text(errors='replace'))}"
        )

    def close(self) -> None:
        """Stop every server this session started (its whole process group)."""
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
        self.servers.clear()


class PythonSession:
    """One interpreter that runs the snippets in one namespace, like a notebook."""

    def __init__(self, workdir: Path, env: dict[str, str], source: Path) -> None:
        self.workdir = workdir
        self.source = source
        self.process: subprocess.Popen[str] | None = None
        self.env = env
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.record: Callable[[Timing], None] = lambda timing: None

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-u", str(SESSION_SCRIPT), str(self.source)],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        return process

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, line: int, code: str, shown: str) -> None:
        """Run ``code`` (which starts at README ``line``); raise on an exception."""
        started, cpu = time.monotonic(), self._cpu()
        try:
            self._run(line, code, shown)
        finally:
            self.record(
                Timing(line, "python snippet", time.monotonic() - started, self._cpu() - cpu)
            )

    def _cpu(self) -> float:
        """CPU seconds of the interpreter and its finished children (Linux; else 0)."""
        if self.process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def _run(self, line: int, code: str, shown: str) -> None:
        if self.process is None:
            self.process = self._start()
        assert self.process.stdin is not None
        snippet = self.workdir / ".readme-shell" / f"snippet-{line}.py"
        snippet.write_text(code)
        self.process.stdin.write(f"{line}\t{snippet}\n")
        self.process.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            try:
                text = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ReadmeCommandError(
                    f"{self.source.name}:{line}: the Python snippet did not finish in "
                    f"{COMMAND_TIMEOUT:.0f} s:\n{shown}\n--- output ---\n{_tail(''.join(output))}"
                ) from None
            if text is None or text.startswith(DONE_MARKER):
                break
            output.append(text)
        if text is None or text.split()[1] != "ok":
            raise ReadmeCommandError(
                f"{self.source.name}:{line}: the Python snippet failed:\n{shown}\n"
                f"--- output ---\n{_tail(''.join(output))}"
            )

    def close(self) -> None:
        """End the interpreter (and any worker processes it left)."""
        if self.process is None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def readme_env(workdir: Path, workers: int = 2) -> dict[str, str]:
    """The environment of a new user's shell: this venv first, small demo data, 2 workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLEARN_")}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        SHARDLEARN_DEMO_ROWS=str(DEMO_ROWS),
        SHARDLEARN_WORKERS=str(workers),
        PYTHONPATH="",
        MPLBACKEND="Agg",
        HOME=env.get("HOME", str(workdir)),
    )
    return env


def run_markdown(
    path: Path,
    workdir: Path,
    log: Callable[[str], None] | None = None,
    from_line: int = 0,
    examples: Path | None = None,
    workers: int = 2,
) -> RunReport:
    """Run every block of the Markdown file ``path`` in ``workdir``; raise on the first failure.

    ``log`` gets one line per command or snippet with its time (for ``--verbose``);
    ``from_line`` > 0 continues a kept folder from the block at or after that line (to debug a
    late block without rerunning everything before it). ``examples`` is the folder copied to
    ``workdir/examples`` first (default: the one beside ``path``; a docs page passes the
    repository's); a ``workdir`` that already has one keeps it (a page run on a copy of the
    getting-started page's folder). ``workers`` is ``$SHARDLEARN_WORKERS``, the engine size
    of a command or snippet that does not give its own.
    """
    started = time.monotonic()
    text = path.read_text()
    blocks = [block for block in parse_markdown(text) if block.line >= from_line]
    examples = path.parent / "examples" if examples is None else examples
    if examples.is_dir() and not from_line and not (workdir / "examples").exists():
        shutil.copytree(examples, workdir / "examples", symlinks=True)  # as cp -r
    env = readme_env(workdir, workers)
    shell = ShellSession(workdir, env, path.name)
    python = PythonSession(workdir, env, path)
    report = RunReport()

    def record(timing: Timing) -> None:
        report.timings.append(timing)
        if log is not None:
            log(str(timing))

    shell.record = python.record = record
    try:
        for block in blocks:
            _run_block(block, shell, python, report, workdir)
    finally:
        shell.close()
        python.close()
    report.seconds = time.monotonic() - started
    return report


def copy_folder(base: Path, workdir: Path) -> None:
    """Copy a finished run's folder into ``workdir`` for the next page, without its shell state."""
    shutil.copytree(
        base,
        workdir,
        symlinks=True,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".readme-shell"),
    )


def _python_code(block: Block, code: str) -> str:
    # Blank lines before the code keep tracebacks on the README's own line numbers.
    return "\n" * (block.line - 1) + code


def _run_block(
    block: Block, shell: ShellSession, python: PythonSession, report: RunReport, workdir: Path
) -> None:
    kind = block.kind
    if kind == "skip":
        report.skipped.append(block)
        return
    if kind == "file":
        target = workdir / block.file  # type: ignore[operator]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.code)
        report.files.append(block)
        return
    if kind == "text":
        report.text.append(block)
        return
    if kind == "shell":
        if block.given:
            shell.run(block.line - 1, block.given)
        for line, command in shell_commands(block.code, block.line):
            shell.run(line, command)
            report.commands += 1
    else:
        if block.given:
            python.run(block.line - 1, block.given, block.given)
        python.run(block.line, _python_code(block, block.code), block.code.rstrip())
    report.ran.append(block)


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests._readme_runner README.md``: run it and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("markdown", type=Path)
    parser.add_argument("--keep", type=Path, help="scratch folder to use and keep")
    parser.add_argument("--verbose", action="store_true", help="print each command's time")
    parser.add_argument(
        "--from-line", type=int, default=0, help="continue a --keep folder from this line"
    )
    parser.add_argument("--base", type=Path, help="start from a copy of this (kept) folder")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=bool(args.from_line))
        workdir = args.keep
    else:
        workdir = Path(tempfile.mkdtemp(prefix="readme-run-"))
    if args.base:
        copy_folder(args.base, workdir)
    try:
        report = run_markdown(
            args.markdown.resolve(),
            workdir.resolve(),
            _print_stderr if args.verbose else None,
            args.from_line,
            examples=REPOSITORY / "examples",
        )
    except ReadmeCommandError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
