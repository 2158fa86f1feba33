"""Reports: strict JSON, one self-contained HTML file, and a real browser renders the plots."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from shardlearn.metrics import (
    EvaluationAccumulator,
    Report,
    UndefinedMetricWarning,
    compare,
)

from .test_functions import predictions

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1300, 2200)
# The plots grid sits below the header and the metric cards; this band of the window
# (fractions of its height) holds the confusion matrix, ROC, PR and calibration figures.
PLOT_BAND = (0.16, 0.64)


def make_report(k: int = 3, n: int = 2000, seed: int = 0, classes=None, **kw) -> Report:
    y, proba, _ = predictions(n, k, seed)
    acc = EvaluationAccumulator(k, **kw).update(y, proba)
    names = classes or [f"class {j}" for j in range(k)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return Report(
            acc,
            names,
            dataset={"uri": "/data/loans", "split": "test", "rows": n},
            model={"type": "LogisticRegression", "params": {"C": 1.0}},
            evaluation={"engine": "local", "workers": 2},
        )


def test_to_dict_is_strict_json_with_every_metric(tmp_path: Path) -> None:
    report = make_report()
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    for key in ("accuracy", "f1_macro", "roc_auc", "pr_auc", "log_loss", "brier", "mcc"):
        assert isinstance(data["metrics"][key], float)
    assert len(data["per_class"]) == 3 and len(data["confusion_matrix"]) == 3
    assert set(data["curves"]) == {"roc", "pr", "calibration"}
    assert all(len(c["fpr"]) <= 600 for c in data["curves"]["roc"].values())
    path = report.to_json(tmp_path / "metrics.json")
    assert json.loads(path.read_text())["metrics"]["accuracy"] == report["accuracy"]


def test_nan_metrics_become_null_in_json() -> None:
    y = np.array([0, 0, 0])
    acc = EvaluationAccumulator(2).update(y, np.tile([0.9, 0.1], (3, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        report = Report(acc, ["a", "b"])
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["metrics"]["roc_auc"] is None


def png_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_is_one_self_contained_file(tmp_path: Path) -> None:
    report = make_report(classes=["<script>alert(1)</script>", "b&b", "c"])
    page = report.to_html(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == page
    images = png_images(page)
    assert len(images) == 4  # confusion matrix, ROC, PR, calibration
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert "<script" not in page  # no scripts at all, and the class name is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from elsewhere
    for text in ("Per class", "Dataset and model", "LogisticRegression", "/data/loans"):
        assert text in page


def test_one_hundred_classes_still_render() -> None:
    report = make_report(k=100, n=3000)
    page = report.to_html()
    assert len(png_images(page)) == 4
    assert len(report.curves["roc"]) == 10  # the ten largest classes are plotted


def test_compare_ranks_models_and_draws_one_plot(tmp_path: Path) -> None:
    good, bad = make_report(seed=1), make_report(seed=2)
    bad_y, bad_proba, _ = predictions(2000, 3, seed=2, skill=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        bad = Report(EvaluationAccumulator(3).update(bad_y, bad_proba), ["a", "b", "c"])
    board = compare({"weak": bad, "strong": good})
    assert [row["model"] for row in board.rows] == ["strong", "weak"]
    assert [row["rank"] for row in board.rows] == [1, 2]
    by_loss = compare({"weak": bad, "strong": good}, sort_by="log_loss")
    assert by_loss.rows[0]["model"] == "strong"
    assert board.plot_png().startswith(b"\x89PNG")
    page = board.to_html(tmp_path / "compare.html")
    assert len(png_images(page)) == 1 and "strong" in page
    json.dumps(board.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="'sort_by' parameter must be one of"):
        compare({"a": good}, sort_by="speed")
    with pytest.raises(ValueError, match="at least one report"):
        compare([])


def test_compare_names_a_list_of_reports_by_model_type() -> None:
    board = compare([make_report(seed=3), make_report(seed=4)])
    assert sorted(row["model"] for row in board.rows) == [
        "LogisticRegression",
        "LogisticRegression #2",
    ]


# -- a real browser ---------------------------------------------------------------------------


def render_in_chromium(page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    """Screenshot ``page`` in headless Chromium; return the RGB image and console messages."""
    shot = tmp_path / f"{page.stem}.png"
    profile = tmp_path / f"profile-{page.stem}"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={shot}",
        "--enable-logging=stderr",
        "--v=0",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return imread(shot)[:, :, :3], console


def plot_band_is_drawn(image: np.ndarray) -> bool:
    """True when the plots' band holds varied, coloured pixels (not a blank page)."""
    height = image.shape[0]
    band = image[int(PLOT_BAND[0] * height) : int(PLOT_BAND[1] * height)]
    colourful = (band.max(axis=2) - band.min(axis=2)) > 0.25
    return bool(band.std() > 0.05 and colourful.mean() > 0.01)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_real_browser_without_console_errors(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    make_report(k=4).to_html(page)
    image, console = render_in_chromium(page, tmp_path)
    assert console == []
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    assert plot_band_is_drawn(image)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_browser_checks_catch_a_broken_page(tmp_path: Path) -> None:
    # The same report with its images removed and a script error: both checks must fail.
    html = make_report(k=4).to_html()
    broken = re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', html)
    broken = broken.replace("</body>", '<script>console.error("broken")</script></body>')
    page = tmp_path / "broken.html"
    page.write_text(broken, encoding="utf-8")
    image, console = render_in_chromium(page, tmp_path)
    assert any("broken" in line for line in console)
    assert not plot_band_is_drawn(image)
