"""The registry: versions, stages, references, lineage, deletion, verification, concurrency."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import registry_helpers

import shardlearn as sl
from shardlearn.exceptions import ArtifactError
from shardlearn.registry import Registry, crypto, load


@pytest.fixture
def registry(tmp_path, centroid_model) -> Registry:
    return Registry(tmp_path / "models")


def test_versions_count_up_per_name(registry, centroid_model):
    assert [registry.register(centroid_model, "iris").version for _ in range(3)] == [1, 2, 3]
    assert registry.register(centroid_model, "wine").version == 1
    assert registry.names() == ["iris", "wine"]
    assert [mv.ref for mv in registry.list()] == ["iris:1", "iris:2", "iris:3", "wine:1"]
    assert (registry.root / "iris" / "3" / "model.json").is_file()
    assert not list((registry.root / ".incoming").iterdir())


def test_register_records_metrics_lineage_and_hash(registry, centroid_model):
    mv = registry.register(
        centroid_model,
        "iris",
        metrics={"accuracy": 0.93},
        lineage={"dataset_manifest_sha256": "cd" * 32, "engine": "local", "workers": 2},
        description="first try",
    )
    assert mv.model_type == "CentroidClassifier"
    assert mv.metrics == {"accuracy": 0.93}
    assert mv.lineage["dataset_manifest_sha256"] == "cd" * 32
    assert mv.lineage["params"] == {"temperature": 2.0}
    assert mv.lineage["engine"] == "local" and mv.lineage["workers"] == 2
    assert mv.description == "first try" and mv.stage is None
    child = registry.register(centroid_model, "iris", parent="iris:1")
    assert child.lineage["parent"] == "iris:1"
    assert json.loads(json.dumps(child.to_dict()))["version"] == 2


def test_parent_must_exist(registry, centroid_model):
    with pytest.raises(ArtifactError, match="no model named 'ghost'"):
        registry.register(centroid_model, "iris", parent="ghost:1")


def test_invalid_names_and_stages_are_refused(registry, centroid_model):
    with pytest.raises(ArtifactError, match="invalid model name 'a/b'"):
        registry.register(centroid_model, "a/b")
    registry.register(centroid_model, "iris")
    with pytest.raises(ArtifactError, match="unknown stage 'prod': choose one of staging"):
        registry.promote("iris", 1, "prod")


def test_promoting_to_production_archives_the_previous_one(registry, centroid_model):
    for _ in range(3):
        registry.register(centroid_model, "iris")
    registry.promote("iris", 1, "production")
    registry.promote("iris", 2, "staging")
    registry.promote("iris", 3, "production")
    stages = {mv.version: mv.stage for mv in registry.list("iris")}
    assert stages == {1: "archived", 2: "staging", 3: "production"}
    assert registry.resolve("iris@production").version == 3
    assert registry.resolve("iris@staging").version == 2
    assert [(e["version"], e["stage"], e["previous"]) for e in registry.history("iris")] == [
        (1, "production", None),
        (2, "staging", None),
        (1, "archived", "production"),
        (3, "production", None),
    ]


def test_register_straight_into_a_stage(registry, centroid_model):
    registry.register(centroid_model, "iris", stage="production")
    registry.register(centroid_model, "iris", stage="production")
    assert [mv.stage for mv in registry.list("iris")] == ["archived", "production"]


def test_load_by_stage_version_latest_and_path(registry, centroid_model, monkeypatch):
    X, _ = registry_helpers.make_data(n=10, seed=3)
    centroid_model.temperature = 1.0
    registry.register(centroid_model, "iris")
    centroid_model.temperature = 5.0
    registry.register(centroid_model, "iris")
    registry.promote("iris", 1, "production")
    root = registry.root
    assert load(f"{root}/iris@production").temperature == 1.0
    assert load(f"{root}/iris:2").temperature == 5.0
    assert load(f"{root}/iris").temperature == 5.0
    assert load(f"{root}/iris:latest").temperature == 5.0
    assert sl.load(root / "iris" / "1").temperature == 1.0
    monkeypatch.chdir(root.parent)
    loaded = load("models/iris@production")
    assert np.array_equal(loaded.predict_proba(X), registry.load("iris:1").predict_proba(X))
    monkeypatch.setenv("SHARDLEARN_MODELS", str(root))
    assert load("iris:2").temperature == 5.0


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("iris:7", "iris has no version 7 \\(versions: 1\\)"),
        ("iris@production", "no version in stage 'production'; promote one with"),
        ("iris@live", "unknown stage 'live'"),
        ("iris:two", "invalid version 'two'"),
        ("rose", "no model named 'rose' .*models: iris"),
    ],
)
def test_bad_references_say_what_exists(registry, centroid_model, ref, message):
    registry.register(centroid_model, "iris")
    with pytest.raises(ArtifactError, match=message):
        load(f"{registry.root}/{ref}")


def test_load_of_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="neither an artifact directory nor in a registry"):
        load(tmp_path / "nowhere" / "model")


def test_delete_keeps_production_unless_forced(registry, centroid_model):
    registry.register(centroid_model, "iris")
    registry.register(centroid_model, "iris", stage="production")
    assert registry.delete("iris", 1) == [1]
    assert not (registry.root / "iris" / "1").exists()
    with pytest.raises(ArtifactError, match="iris:2 is in production.*--force"):
        registry.delete("iris", 2)
    assert registry.delete("iris", force=True) == [2]
    assert registry.names() == []
    # Numbers are never reused, so "iris:2" can never come to mean another model.
    assert registry.register(centroid_model, "iris").version == 3


def test_verify_finds_tampered_and_replaced_artifacts(registry, centroid_model, tmp_path):
    for _ in range(3):
        registry.register(centroid_model, "iris")
    assert [error for _, error in registry.verify()] == [None, None, None]
    arrays = registry.root / "iris" / "2" / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[-3] ^= 0x10
    arrays.write_bytes(bytes(data))
    # A valid artifact of another model swapped in for version 3.
    centroid_model.temperature = 9.0
    other = sl.save(centroid_model, tmp_path / "other")
    (registry.root / "iris" / "3" / "model.json").write_bytes((other / "model.json").read_bytes())
    (registry.root / "iris" / "3" / "files" / "temperature.bin").write_bytes(
        (other / "files" / "temperature.bin").read_bytes()
    )
    results = {mv.version: error for mv, error in registry.verify()}
    assert results[1] is None
    assert "arrays.npz" in results[2]
    assert "does not match the registry index" in results[3]


def test_add_artifact_copies_a_verified_artifact(registry, centroid_model, tmp_path):
    path = sl.save(centroid_model, tmp_path / "loose", metrics={"accuracy": 0.8})
    mv = registry.add_artifact(path, "iris", stage="staging")
    assert (mv.version, mv.stage, mv.metrics) == (1, "staging", {"accuracy": 0.8})
    assert path.is_dir()  # the source is copied, not moved


def test_orphan_directory_from_a_crash_is_never_overwritten(registry, centroid_model):
    registry.register(centroid_model, "iris")
    (registry.root / "iris" / "2").mkdir()  # rename happened, commit did not
    assert registry.register(centroid_model, "iris").version == 3
    assert registry.orphans() == [registry.root / "iris" / "2"]


def test_two_processes_registering_fifty_versions_each_lose_nothing(tmp_path):
    root = tmp_path / "models"
    arguments = [(str(root), "race", 50, seed) for seed in (1, 2)]
    versions = registry_helpers.race(registry_helpers.register_many, arguments)
    assert sorted(versions[0] + versions[1]) == list(range(1, 101))
    registry_helpers.install()
    try:
        registry = Registry(root)
        listed = registry.list("race")
        assert [mv.version for mv in listed] == list(range(1, 101))
        assert sorted(p.name for p in (root / "race").iterdir()) == sorted(
            str(v) for v in range(1, 101)
        )
        assert all(error is None for _, error in registry.verify())
        seeds = sorted(mv.metrics["seed"] for mv in listed)
        assert seeds == [1] * 50 + [2] * 50
        with sqlite3.connect(registry.index_path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        registry_helpers.uninstall()


def test_register_with_explicit_keys_and_load_them_back(registry, centroid_model):
    sign_key, encryption_key = "e" * 32, crypto.generate_key()
    mv = registry.register(centroid_model, "iris", sign=sign_key, encrypt=encryption_key)
    assert mv.signed and mv.encrypted and mv.model_type == "CentroidClassifier"
    with pytest.raises(ArtifactError, match="is encrypted"):
        registry.load("iris:1")
    loaded = registry.load("iris:1", signing_key=sign_key, encryption_key=encryption_key)
    assert loaded.temperature == centroid_model.temperature
