"""``save(..., overwrite=True)`` replaces a shardlearn artifact and never any other folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import load, save


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_overwrite_replaces_an_artifact_and_fills_an_empty_folder(tmp_path, centroid_model):
    out = tmp_path / "model"
    save(centroid_model, out, metrics={"run": 1})
    save(centroid_model, out, metrics={"run": 2}, overwrite=True)
    assert load(out).predict([[0.0, 0.0, 0.0, 0.0]]).shape == (1,)
    (tmp_path / "empty").mkdir()
    save(centroid_model, tmp_path / "empty", overwrite=True)
    assert (tmp_path / "empty" / "model.json").is_file()


def _project(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "notes.txt").write_text("keep me")
    (root / "src" / "main.py").write_text("print('keep me too')")


def _dataset_like(root: Path) -> None:
    (root / "train").mkdir(parents=True)
    (root / "manifest.json").write_text('{"format": "shardlearn-dataset"}')
    (root / "train" / "part-0.parquet").write_bytes(b"PAR1")


def _foreign_model_json(root: Path) -> None:
    root.mkdir()
    (root / "model.json").write_text('{"format": "someone-else", "files": {}}')
    (root / "weights.bin").write_bytes(b"\0" * 16)


def _a_file(root: Path) -> None:
    root.write_text("not a folder")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_project, "it has no shardlearn model.json"),
        (_dataset_like, "it has no shardlearn model.json"),
        (_foreign_model_json, "it has no shardlearn model.json"),
        (_a_file, "it is not a folder"),
    ],
)
def test_overwrite_refuses_what_is_not_a_model_and_leaves_it_intact(
    tmp_path, centroid_model, make, why
):
    out = tmp_path / "out"
    make(out)
    before = out.read_bytes() if out.is_file() else _tree(out)
    with pytest.raises(ArtifactError, match=rf"out exists and is not a shardlearn model \({why}\)"):
        save(centroid_model, out, overwrite=True)
    assert (out.read_bytes() if out.is_file() else _tree(out)) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


def test_overwrite_refuses_an_artifact_holding_other_files_or_links(tmp_path, centroid_model):
    out = tmp_path / "model"
    save(centroid_model, out)
    (out / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ArtifactError, match=r"\(it also holds results\.csv\); refusing"):
        save(centroid_model, out, overwrite=True)
    assert (out / "results.csv").read_text() == "a,b\n1,2\n"
    (out / "results.csv").unlink()
    (tmp_path / "elsewhere").mkdir()
    (out / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match=r"\(it also holds linked\)"):
        save(centroid_model, out, overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(ArtifactError, match=r"link exists .*\(it is not a folder\)"):
        save(centroid_model, link, overwrite=True)


def test_overwrite_at_a_uri_refuses_what_is_not_a_model(tmp_path, centroid_model):
    # A folder holding someone's model.json used to be deleted whole before the upload.
    project = tmp_path / "project"
    _foreign_model_json(project)
    (project / "src").mkdir()
    (project / "src" / "main.py").write_text("keep me")
    before = _tree(project)
    with pytest.raises(ArtifactError, match=r"project exists and is not a shardlearn model"):
        save(centroid_model, f"file://{project}", overwrite=True)
    assert _tree(project) == before
    uri = f"file://{tmp_path / 'model'}"
    save(centroid_model, uri)
    save(centroid_model, uri, overwrite=True)  # its own artifact is replaced
    assert load(uri).predict([[0.0, 0.0, 0.0, 0.0]]).shape == (1,)
