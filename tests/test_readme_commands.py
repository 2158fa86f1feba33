"""The README's and the docs' commands are tests (issues #22, #25): every command and snippet runs.

``test_readme_runs_as_written`` runs README.md top to bottom in a scratch folder with
``tests/_readme_runner.py`` (small demo data through ``$SHARDLEARN_DEMO_ROWS``).
``test_getting_started_runs_as_written`` runs docs/getting-started.md the same way, once per
session, and ``test_docs_page_runs_as_written`` runs every other page of docs/ that has a command
or a snippet in a copy of the folder it left (its dataset, models and registry), one test per
page. The other tests check that no block runs twice, that the runner itself fails on a broken
command, counts what it skips, keeps shell state, starts and stops servers, and that
``examples/`` holds real files.

The runs are independent processes in their own folders, and most of their time is one
single-threaded process (a CLI command, a snippet's fit), so :func:`runs` starts every selected
run at once on ``PARALLEL_RUNS`` threads -- README.md beside the getting-started page, then the
pages in order as the threads free up -- and each test waits for its own run's result (its
report, or the error that fails it).
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests._readme_runner import (
    ReadmeCommandError,
    RunReport,
    copy_folder,
    parse_markdown,
    run_markdown,
    shell_commands,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TOUR = DOCS / "getting-started.md"
FENCE = "```"
PARALLEL_RUNS = 2  # CI's cores; a run mostly keeps one busy
# Pages that never mention workers: their commands run on one in-process worker
# ($SHARDLEARN_WORKERS=1), which starts no worker interpreter. A page that teaches workers, or
# whose commands give --workers or workers=, keeps what it says.
ONE_WORKER_PAGES = frozenset(
    {
        "how-to/ingest-messy-csv.md",
        "how-to/label-free-data.md",
        "how-to/preprocessing.md",
        "how-to/rotate-signing-keys.md",
    }
)
README_RUN = "README.md"


def _runs_code(path: Path) -> bool:
    return any(b.kind in ("shell", "python") for b in parse_markdown(path.read_text()))


def _doc_pages() -> list[str]:
    """Every docs page with a command or snippet to run, except the getting-started page."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if p != TOUR and _runs_code(p)]
    return [page.relative_to(DOCS).as_posix() for page in pages]


def _write_readme(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "README.md"
    path.write_text(textwrap.dedent(text).replace("~~~", FENCE))
    return path


def _selected_runs(session: pytest.Session) -> list[str]:
    """The runs the selected tests need: README.md, the tour and pages, in collection order."""
    tests = {
        "test_readme_runs_as_written": README_RUN,
        "test_getting_started_runs_as_written": TOUR.name,
    }
    runs: list[str] = []
    for item in session.items:
        name = getattr(item, "originalname", item.name)
        callspec = getattr(item, "callspec", None)
        if name == "test_docs_page_runs_as_written" and callspec is not None:
            runs.append(callspec.params["page"])
        elif name in tests:
            runs.append(tests[name])
    return runs


def _page_on_tour(tour: Future[RunReport], folder: Path, page: str, workdir: Path) -> RunReport:
    tour.result()  # the page starts from the tour's folder; its failure fails the page too
    copy_folder(folder, workdir)
    workers = 1 if page in ONE_WORKER_PAGES else 2
    return run_markdown(DOCS / page, workdir, examples=ROOT / "examples", workers=workers)


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, Future[RunReport]]]]:
    """Every selected run started at once on ``PARALLEL_RUNS`` threads; the tour's folder.

    README.md and docs/getting-started.md (the tour) start first; each page runs on a copy of
    the folder the tour left (its dataset, models and registry) once the tour is done.
    """
    selected = _selected_runs(request.session)
    pool = ThreadPoolExecutor(PARALLEL_RUNS, thread_name_prefix="docs-run")
    futures: dict[str, Future[RunReport]] = {}
    if README_RUN in selected:
        futures[README_RUN] = pool.submit(
            run_markdown, ROOT / README_RUN, tmp_path_factory.mktemp("readme")
        )
    folder = tmp_path_factory.mktemp("tour")
    pages = [run for run in selected if run not in (README_RUN, TOUR.name)]
    if pages or TOUR.name in selected:
        futures[TOUR.name] = tour = pool.submit(
            run_markdown, TOUR, folder, examples=ROOT / "examples"
        )
        for page in pages:
            workdir = tmp_path_factory.mktemp(re.sub(r"\W", "-", page))
            futures[page] = pool.submit(_page_on_tour, tour, folder, page, workdir)
    try:
        yield folder, futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a few minutes on 2 quiet cores; the suite's 600 s is per test
def test_readme_runs_as_written(runs: tuple[Path, dict[str, Future[RunReport]]]) -> None:
    report = runs[1][README_RUN].result()
    print(report.summary())
    assert len(report.ran) >= 1
    assert all(block.skip for block in report.skipped)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_getting_started_runs_as_written(
    runs: tuple[Path, dict[str, Future[RunReport]]],
) -> None:
    folder, futures = runs
    report = futures[TOUR.name].result()
    print(report.summary())
    assert report.commands > 10 and len(report.ran) >= 2
    assert (folder / "data" / "loans" / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("page", _doc_pages())
def test_docs_page_runs_as_written(
    page: str, runs: tuple[Path, dict[str, Future[RunReport]]]
) -> None:
    report = runs[1][page].result()
    print(report.summary())
    assert report.ran
    assert all(block.skip for block in report.skipped)


def test_a_page_fails_with_the_error_of_the_tour_it_starts_from(tmp_path: Path) -> None:
    tour: Future[RunReport] = Future()
    tour.set_exception(ReadmeCommandError("getting-started.md:27: `shardlearn ingest` exited"))
    with pytest.raises(ReadmeCommandError, match="getting-started.md:27"):
        _page_on_tour(tour, tmp_path / "tour", "how-to/partitioning.md", tmp_path / "page")
    assert not (tmp_path / "page").exists()  # nothing of the page ran


def test_one_worker_pages_exist_and_never_mention_workers() -> None:
    pages = set(_doc_pages())
    for page in ONE_WORKER_PAGES:
        assert page in pages
        assert "worker" not in (DOCS / page).read_text().lower(), f"{page} teaches workers"


def test_doc_pages_are_collected_and_no_block_runs_twice() -> None:
    pages = _doc_pages()
    assert {"tutorials/search.md", "tutorials/serving.md", "how-to/ingest-messy-csv.md"} <= set(
        pages
    )
    seen: dict[str, str] = {}
    for path in [ROOT / "README.md", TOUR, *(DOCS / page for page in pages)]:
        for block in parse_markdown(path.read_text()):
            if block.kind not in ("shell", "python"):
                continue
            where = f"{path.relative_to(ROOT)}:{block.line}"
            assert block.code not in seen, f"{where} repeats {seen.get(block.code)}; keep one"
            seen[block.code] = where


def test_readme_is_short_and_links_only_to_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "README.md is one screen or two; move text to docs/"
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) > 20
    assert [link for link in links if not (ROOT / link).is_file()] == []


def test_a_page_runs_in_a_copy_of_the_folder_it_starts_from(tmp_path: Path) -> None:
    base = tmp_path / "base"
    first = _write_readme(base, "~~~bash\nmkdir -p data && echo 42 > data/answer.txt\n~~~\n")
    run_markdown(first, base)
    page = _write_readme(tmp_path / "src", '~~~bash\ntest "$(cat data/answer.txt)" = 42\n~~~\n')
    work = tmp_path / "work"
    copy_folder(base, work)
    assert not (work / ".readme-shell").exists()  # the shell state (its cwd) is not copied
    assert run_markdown(page, work).commands == 1
    assert Path((work / ".readme-shell" / "pwd").read_text().strip()) == work


def test_a_broken_command_fails_with_the_command_and_its_output(tmp_path: Path) -> None:
    readme = _write_readme(
        tmp_path / "src",
        """
        # Demo
        ~~~bash
        echo first command runs
        shardlearn describe data/never-ingested     # a dataset that does not exist
        echo never reached > reached.txt
        ~~~
        """,
    )
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ReadmeCommandError) as caught:
        run_markdown(readme, work)
    message = str(caught.value)
    assert "README.md:5: `shardlearn describe data/never-ingested" in message
    assert "exited with 1" in message
    assert "data/never-ingested" in message.split("exited with 1", 1)[1]  # its own output
    assert not (work / "reached.txt").exists()


def test_a_broken_python_snippet_fails_with_its_code_and_traceback(tmp_path: Path) -> None:
    readme = _write_readme(
        tmp_path / "src",
        """
        ~~~python
        answer = 42
        ~~~

        ~~~python
        print("before the error")
        import shardlearn as sl
        sl.Dataset.open("data/never-ingested")
        ~~~
        """,
    )
    with pytest.raises(ReadmeCommandError) as caught:
        run_markdown(readme, tmp_path)
    message = str(caught.value)
    assert message.startswith("README.md:7: the Python snippet failed")
    assert 'sl.Dataset.open("data/never-ingested")' in message
    assert "before the error" in message
    assert 'File "README.md", line 9' in message  # the traceback points at the README's line


def test_skipped_files_and_given_blocks(tmp_path: Path) -> None:
    readme = _write_readme(
        tmp_path / "src",
        """
        <!-- readme: skip (a benchmark: minutes of work) -->
        ~~~bash
        exit 3
        ~~~

        <!-- readme: file conf/space.yaml -->
        ~~~yaml
        C: {loguniform: [0.001, 100]}
        ~~~

        ~~~yaml
        not: [run, or, written]
        ~~~

        <!-- readme: given
        import numpy as np
        X = np.arange(6).reshape(3, 2)
        -->
        ~~~python
        assert X.sum() == 15
        assert open("conf/space.yaml").read().startswith("C: ")
        ~~~
        """,
    )
    report = run_markdown(readme, tmp_path)
    assert [block.skip for block in report.skipped] == ["a benchmark: minutes of work"]
    assert [block.file for block in report.files] == ["conf/space.yaml"]
    assert len(report.text) == 1 and len(report.ran) == 1
    assert "skipped line 4: a benchmark: minutes of work" in report.summary()


@pytest.mark.parametrize(
    ("directive", "error"),
    [
        ("<!-- readme: skip -->", "unknown README directive"),
        ("<!-- readme: skipp (typo) -->", "unknown README directive"),
        ("<!-- readme: skip (reason) -->\nsome text", "must come just before a fenced block"),
    ],
)
def test_a_directive_without_a_reason_or_misspelt_is_refused(directive: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_markdown(f"{directive}\n{FENCE}bash\nexit 1\n{FENCE}\n")


def test_shell_commands_are_split_like_a_user_types_them() -> None:
    code = textwrap.dedent(
        """\
        # a comment line is not a command
        shardlearn ingest a.csv \\
            --out data/a                 # a continued command
        curl -d '{"a": 1,
                  "b": 2}' http://x      # a quote open across lines

          indented --too
        """
    )
    assert list(shell_commands(code, 10)) == [
        (11, "shardlearn ingest a.csv \\\n    --out data/a                 # a continued command"),
        (13, 'curl -d \'{"a": 1,\n          "b": 2}\' http://x      # a quote open across lines'),
        (16, "  indented --too"),
    ]


def test_shell_variables_and_directory_carry_over(tmp_path: Path) -> None:
    readme = _write_readme(
        tmp_path / "src",
        """
        ~~~bash
        TOKEN=$(echo secret-token | tail -n 1)
        mkdir -p sub && cd sub
        ~~~

        Later, in another block:

        ~~~bash
        test "$TOKEN" = secret-token
        test "$(basename "$PWD")" = sub
        test "$SHARDLEARN_DEMO_ROWS" -le 10000   # the runner's small-data default
        ~~~
        """,
    )
    report = run_markdown(readme, tmp_path)
    assert report.commands == 5


def test_a_server_is_polled_until_ready_and_stopped(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    _tiny_registry(tmp_path / "models")
    readme = _write_readme(
        tmp_path / "src",
        """
        ~~~bash
        shardlearn serve --registry models --no-auth --port 8000
        curl -sS --fail-with-body http://127.0.0.1:8000/healthz
        curl -sS http://127.0.0.1:8000/healthz > health.json
        ~~~
        """,
    )
    before = set(os.listdir("/proc")) if Path("/proc").is_dir() else set()
    run_markdown(readme, tmp_path)
    assert (tmp_path / "health.json").read_text().strip()  # the README's port was rewritten
    logs = list((tmp_path / ".readme-shell").glob("server-*.log"))
    assert len(logs) == 1
    port = logs[0].stem.split("-")[1]
    assert port != "8000"
    if before:  # the server's process group is gone once the run returns
        started = set(os.listdir("/proc")) - before
        alive = [p for p in started if p.isdigit() and _is_serve(Path("/proc", p))]
        assert alive == []


def _tiny_registry(root: Path) -> None:
    """A registry with one small logistic regression, for a server to load."""
    import numpy as np
    import pandas as pd

    import shardlearn as sl

    X = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7})
    with sl.engine("local", workers=1):
        model = sl.LogisticRegression().fit(X, (X["a"] > 20).to_numpy(dtype=int))
    sl.Registry(root).register(model, "tiny")


def _is_serve(proc: Path) -> bool:
    try:
        return b"serve" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_a_server_that_exits_fails_with_its_log(tmp_path: Path) -> None:
    readme = _write_readme(
        tmp_path / "src",
        """
        ~~~bash
        shardlearn serve --registry models --model no-such-model --port 8000
        ~~~
        """,
    )
    with pytest.raises(ReadmeCommandError, match=r"README.md:3: server `shardlearn serve"):
        run_markdown(readme, tmp_path)


def test_examples_are_real_files_and_loans_equals_the_packaged_spec() -> None:
    examples = ROOT / "examples"
    links = [path.name for path in examples.iterdir() if path.is_symlink()]
    assert links == [], f"examples/ must hold real files (copying it breaks links): {links}"
    packaged = ROOT / "src" / "shardlearn" / "pipeline" / "specs" / "loans.yaml"
    assert (examples / "loans.yaml").read_bytes() == packaged.read_bytes(), (
        "examples/loans.yaml and the demo's packaged spec differ; copy one onto the other"
    )
