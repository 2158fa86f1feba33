"""Progress everywhere (issue 22, finding 2): forests, neural nets, KMeans, self-training and
ingest draw a bar.

The bars go to stderr (:mod:`shardlearn._terminal` decides, :mod:`shardlearn.engine._progress`
draws). ``SHARDLEARN_PROGRESS=always`` renders them as on a terminal into pytest's captured
stderr, where every step is drawn at least once (a step refreshes the bar), so the tests read
the figures back and compare them with the fitted model's. No test sleeps or times anything.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from shardlearn import _terminal
from shardlearn.engine import PROGRESS_ENV, engine, show_progress
from shardlearn.models import KMeans, RandomForestClassifier

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bars drawn as on a 200-column terminal, on a console made for this test."""
    monkeypatch.setenv(PROGRESS_ENV, "always")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(_terminal, "_CONSOLES", {})


def _frames(text: str) -> list[str]:
    """Every drawn state of the bars, escape codes removed, one string per redraw."""
    return [frame.strip() for frame in re.split(r"[\r\n]", _ESCAPE.sub("", text)) if frame]


def _data(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


def test_forest_reports_the_trees_grown_and_is_the_same_forest_without_the_bar(terminal, capsys):
    X, y = _data()
    with engine("local", workers=2):
        shown = RandomForestClassifier(n_estimators=13, random_state=0).fit(X, y)
        text = capsys.readouterr().err
        quiet = RandomForestClassifier(n_estimators=13, random_state=0, verbose=0).fit(X, y)
    assert capsys.readouterr().err == ""
    done = [
        int(m.group(1))
        for frame in _frames(text)
        if (m := re.match(r"RandomForestClassifier trees .*?(\d+)/13", frame))
    ]
    assert done[-1] == 13 == shown.n_estimators_
    # The bar moved tree by tree in rounds (7 + 6 trees dealt, up to 10 rounds), not once.
    assert {2, 4, 12} <= set(done)
    assert done == sorted(done)
    np.testing.assert_array_equal(shown.predict_proba(X), quiet.predict_proba(X))
    np.testing.assert_array_equal(shown.feature_, quiet.feature_)


def _epochs(text: str, name: str) -> dict[int, tuple[str, ...]]:
    """Epoch -> (loss, valid loss, valid accuracy) as drawn (valid figures may be absent)."""
    pattern = re.compile(
        rf"{name} epochs .*?(\d+)/\d+ loss (\S+)(?:  valid loss (\S+)  acc (\S+))?"
    )
    drawn: dict[int, tuple[str, ...]] = {}
    for frame in _frames(text):
        if (m := pattern.match(frame)) and int(m.group(1)) > 0:
            drawn[int(m.group(1))] = tuple(g for g in m.groups()[1:] if g is not None)
    return drawn


def test_ddp_mlp_reports_every_epochs_loss_and_valid_metrics(terminal, capsys, tmp_path):
    pytest.importorskip("torch")
    import pyarrow as pa

    from shardlearn.data import write_dataset
    from shardlearn.models import MLPClassifier

    X, y = _data(240)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)}, "label": y})
    ds = write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0.6, 0.4, 0))
    with engine("local", workers=2):
        model = MLPClassifier(
            hidden_layer_sizes=(8,), epochs=4, early_stopping=False, random_state=0
        ).fit(ds)
    drawn = _epochs(capsys.readouterr().err, "MLPClassifier")
    assert sorted(drawn) == [1, 2, 3, 4] and len(model.validation_scores_) == 4
    for epoch, (loss, accuracy) in enumerate(
        zip(model.loss_curve_, model.validation_scores_, strict=True), start=1
    ):
        drawn_loss, valid_loss, drawn_accuracy = drawn[epoch]
        assert (drawn_loss, drawn_accuracy) == (f"{loss:.4g}", f"{accuracy:.4f}")
        assert float(valid_loss) > 0  # the valid split's loss, drawn with the accuracy


def test_pipeline_parallel_mlp_reports_every_epochs_loss(terminal, capsys):
    pytest.importorskip("torch")
    from shardlearn.models import MLPClassifier

    X, y = _data(160)
    with engine("local", workers=2):
        model = MLPClassifier(
            hidden_layer_sizes=(8,), epochs=3, parallelism="pipeline", stages=2, random_state=0
        ).fit(X, y)
    drawn = _epochs(capsys.readouterr().err, "MLPClassifier")
    assert drawn == {i + 1: (f"{loss:.4g}",) for i, loss in enumerate(model.loss_curve_)}
    assert len(drawn) == 3


def test_kmeans_reports_every_lloyd_iteration(terminal, capsys):
    X, _ = _data()
    model = KMeans(3, random_state=0).fit(X, engine="local")
    pattern = re.compile(r"KMeans iterations .*?(\d+)/300 inertia (\S+)")
    drawn = {
        int(m.group(1)): float(m.group(2))
        for frame in _frames(capsys.readouterr().err)
        if (m := pattern.match(frame))
    }
    assert sorted(drawn) == list(range(1, model.n_iter_ + 1))
    # The inertia drawn at an iteration is that of the centres it started from: it never
    # rises, and it ends near the fitted model's.
    inertias = [drawn[i] for i in sorted(drawn)]
    assert inertias == sorted(inertias, reverse=True)
    assert inertias[-1] == pytest.approx(model.inertia_, rel=1e-3)


def test_verbose_0_prints_nothing_even_on_a_terminal(terminal, capsys):
    X, y = _data(120)
    with engine("local", workers=1):
        RandomForestClassifier(n_estimators=3, random_state=0, verbose=0).fit(X, y)
        KMeans(2, random_state=0, verbose=False).fit(X)
    assert capsys.readouterr().err == ""
    assert not show_progress(0)


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    pytest.importorskip("torch")
    from shardlearn.models import MLPClassifier

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    X, y = _data(120)
    with engine("local", workers=1):
        RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
        MLPClassifier(hidden_layer_sizes=(4,), epochs=2, random_state=0).fit(X, y)
        KMeans(2, random_state=0).fit(X)
    assert capsys.readouterr().err == ""  # pytest's capture is not a terminal


def test_a_wrong_progress_setting_is_refused(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match="SHARDLEARN_PROGRESS must be one of auto, always"):
        show_progress(True)
    monkeypatch.setenv(PROGRESS_ENV, "never")
    assert not show_progress(True)


def test_verbose_is_validated_like_every_parameter():
    X, y = _data(60)
    with pytest.raises(ValueError, match="'verbose' parameter of RandomForestClassifier"):
        RandomForestClassifier(verbose=-1).fit(X, y, engine="local")


def _fit_forest_in_a_task() -> int:
    from shardlearn.engine import engine as use_engine

    X, y = _data(60)
    with use_engine("local", workers=1):
        return RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y).n_estimators_


def test_a_fit_inside_a_task_process_draws_no_bar(terminal, capfd):
    # A task process inherits the driver's stderr (capfd sees it at the descriptor level);
    # only the driver draws, so a search trial or pipeline stage cannot garble its display.
    with engine("local", workers=2) as eng:
        assert eng.submit(_fit_forest_in_a_task).result() == 3
    assert "trees" not in capfd.readouterr().err


def test_cli_train_shows_the_trees_grown(terminal, capsys, tmp_path):
    import pyarrow as pa

    from shardlearn.data import write_dataset
    from shardlearn.testing import run_cli

    X, y = _data(200)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)}, "label": y})
    write_dataset(table, tmp_path / "ds", label="label", partitions=2, split=(0.8, 0.2, 0))
    code, _, err = run_cli(
        capsys,
        "train",
        str(tmp_path / "ds"),
        "--model",
        "random_forest",
        "--param",
        "n_estimators=6",
        "--workers",
        "2",
        "--out",
        str(tmp_path / "model"),
    )
    assert code == 0, err
    assert re.search(r"RandomForestClassifier trees .*6/6", "\n".join(_frames(err)))


def test_self_training_reports_each_rounds_pseudo_labelled_rows(terminal, capsys):
    from shardlearn.models import SelfTrainingClassifier

    X, y = _data(300)
    y = y.copy()
    y[40:] = -1  # 40 labelled rows
    model = SelfTrainingClassifier(threshold=0.8, max_rounds=4).fit(X, y, engine="local")
    pattern = re.compile(r"SelfTrainingClassifier rounds .*?(\d+)/4 ([\d,]+) rows pseudo")
    drawn = {
        int(m.group(1)): int(m.group(2).replace(",", ""))
        for frame in _frames(capsys.readouterr().err)
        if (m := pattern.match(frame))
    }
    expected = {r["round"]: r["rows_pseudo_labelled"] for r in model.history_[1:]}
    assert model.n_rounds_ >= 2
    assert drawn == expected


def test_ingest_bar_ends_on_every_byte_when_the_reader_counts_them_after_the_last_batch(
    terminal, capsys, tmp_path, monkeypatch
):
    """The reader counts a range's bytes as done only after handing over its last batch; with
    batches converted in order on the calling thread (the slowest reader thread there is), the
    last batch is drawn before its bytes count, so the bar must draw its figures once more."""
    from shardlearn.data import _ingest_run, ingest

    monkeypatch.setattr(_ingest_run, "pipelined_map", lambda function, items: map(function, items))
    X, y = _data(300)
    csv = tmp_path / "rows.csv"
    csv.write_text("a,label\n" + "".join(f"{a:.3f},{c}\n" for a, c in zip(X[:, 0], y, strict=True)))
    ingest(str(csv), "label", str(tmp_path / "out"), partitions=2)
    size = f"{csv.stat().st_size / 1000:.1f}"
    final = _frames(capsys.readouterr().err)[-1]
    assert "ingest 300 rows" in final and f"{size}/{size} kB" in final, final


def test_ingest_from_python_shows_rows_and_bytes_unless_told_not_to(terminal, capsys, tmp_path):
    from shardlearn.data import ingest

    X, y = _data(300)
    csv = tmp_path / "rows.csv"
    lines = ["a,b,label"] + [f"{a:.3f},{b:.3f},{c}" for (a, b), c in zip(X[:, :2], y, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    ingest(str(csv), "label", str(tmp_path / "shown"), partitions=2)
    frames = _frames(capsys.readouterr().err)
    size = f"{csv.stat().st_size / 1000:.1f}"  # rich's decimal kB, as DownloadColumn prints
    assert any("ingest 300 rows" in f and f"{size}/{size} kB" in f for f in frames), frames
    ingest(str(csv), "label", str(tmp_path / "quiet"), partitions=2, progress=False)
    assert capsys.readouterr().err == ""
