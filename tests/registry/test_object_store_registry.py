"""The registry at an ``s3://`` root (no local index file), against a real S3 API (moto's server).

Version numbers come from conditional creates of version records (``If-None-Match: *``), so
these tests race real processes against the real server and kill a real writer before its
commit; integrity checks (index sha256, file hashes, signatures) must hold as for a local root.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import registry_helpers

import shardlearn as sl
from shardlearn.exceptions import ArtifactError
from shardlearn.registry import Registry
from shardlearn.testing import run_cli

pytest.importorskip("moto.server")  # s3_endpoint and s3_bucket: tests/conftest.py
pytest.importorskip("boto3")

HELPERS = Path(__file__).parent


@pytest.fixture
def root(s3_endpoint, s3_bucket, request) -> str:
    """A fresh bucket per test; the S3 options travel in the URI's query."""
    bucket = "reg-" + request.node.name.replace("_", "-")[:50].strip("-").lower()
    s3_bucket(bucket)
    return f"s3://{bucket}/models?endpoint_override={s3_endpoint}&scheme=http"


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(root)


@pytest.mark.slow
def test_two_processes_registering_twenty_versions_each_lose_nothing(root):
    # 2 x 20, not the 2 x 50 of the local test: each registration is ~10 requests to a moto
    # server in this process, and 2 x 50 took over a minute on the shared machine.
    arguments = [(root, "race", 20, seed) for seed in (1, 2)]
    versions = registry_helpers.race(registry_helpers.register_many, arguments)
    assert sorted(versions[0] + versions[1]) == list(range(1, 41))  # none lost or duplicated
    registry_helpers.install()
    try:
        registry = Registry(root)
        listed = registry.list("race")
        assert [mv.version for mv in listed] == list(range(1, 41))
        assert sorted(mv.metrics["seed"] for mv in listed) == [1] * 20 + [2] * 20
        assert len({mv.path for mv in listed}) == 40  # each version its own artifact
        assert registry.orphans() == []
        assert all(error is None for _, error in registry.verify())
    finally:
        registry_helpers.uninstall()


def promote_many(root: str, order: list[int], start, results) -> None:
    """Child-process body: promote each version of ``order`` to production in turn."""
    registry = Registry(root)
    start.wait()
    results.put([registry.promote("race", v, "production").stage for v in order])


@pytest.mark.slow
def test_concurrent_promotions_serialise_through_the_event_log(root, centroid_model):
    registry = Registry(root)
    for _ in range(4):
        registry.register(centroid_model, "race")
    orders = ([1, 2, 3, 4] * 2, [4, 3, 2, 1] * 2)
    outcomes = registry_helpers.race(promote_many, [(root, order) for order in orders])
    assert outcomes == [["production"] * 8] * 2
    # Every promotion is in the history, none overwritten by a racing one, and each change
    # saw the state the one before it left: at most one production version at any time.
    history = registry.history("race")
    assert sum(h["stage"] == "production" for h in history) == 16
    stages: dict[int, str | None] = {}
    for change in history:
        assert change["previous"] == stages.get(change["version"])
        stages[change["version"]] = change["stage"]
        assert list(stages.values()).count("production") <= 1
    assert [mv.stage for mv in registry.list("race")].count("production") == 1


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {helpers!r})
    import registry_helpers
    from shardlearn.registry import Registry, _object_index

    registry_helpers.install()
    create = _object_index.ObjectStore.create

    def create_then_stall(self, relative, data):
        if "/versions/" in relative:  # the artifact is uploaded; this is the commit
            print("committing", flush=True)
            sys.stdin.read()  # wait to be killed
        return create(self, relative, data)

    _object_index.ObjectStore.create = create_then_stall
    Registry({root!r}).register(registry_helpers.fitted_model(1), "iris")
    """
)


def test_a_writer_killed_before_its_commit_leaves_no_visible_version(root, centroid_model):
    registry = Registry(root)
    registry.register(centroid_model, "iris")
    script = _KILLED_WRITER.format(helpers=str(HELPERS), root=root)
    writer = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "committing\n"  # it uploaded its artifact
        writer.kill()
    finally:
        writer.wait(timeout=60)
        writer.stdin.close()
        writer.stdout.close()
    assert [mv.version for mv in registry.list("iris")] == [1]
    (orphan,) = registry.orphans()  # its artifact is there, but no version refers to it
    assert "/iris/artifacts/" in orphan
    with pytest.raises(ArtifactError, match="no version refers to"):
        sl.load(orphan)
    assert registry.register(centroid_model, "iris").version == 2
    assert all(error is None for _, error in registry.verify())


def test_models_cli_list_show_promote_verify_on_s3(root, centroid_model, capsys, tmp_path):
    registry = Registry(root)
    registry.register(centroid_model, "iris", metrics={"accuracy": 0.81})
    registry.register(centroid_model, "iris", metrics={"accuracy": 0.9})
    code, out, err = run_cli(capsys, "models", "list", "--registry", root, "--json")
    assert code == 0, err
    assert [(v["version"], v["metrics"]) for v in json.loads(out)] == [
        (1, {"accuracy": 0.81}),
        (2, {"accuracy": 0.9}),
    ]
    for version in ("1", "2"):
        code, out, err = run_cli(
            capsys, "models", "promote", "iris", version, "production", "--registry", root
        )
        assert (code, out.strip()) == (0, f"iris:{version} is now in production"), err
    code, out, err = run_cli(capsys, "models", "show", "iris@production", "--registry", root,
                             "--json")  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["version"], shown["stage"], shown["model_type"]) == (
        2, "production", "CentroidClassifier",
    )  # fmt: skip
    assert registry.get("iris", 1).stage == "archived"
    assert [(h["version"], h["stage"]) for h in registry.history("iris")] == [
        (1, "production"), (1, "archived"), (2, "production"),
    ]  # fmt: skip
    code, out, err = run_cli(capsys, "models", "verify", "--registry", root)
    assert code == 0, err
    assert "2 artifacts verified" in out
    loose = sl.save(centroid_model, tmp_path / "loose")
    code, out, err = run_cli(capsys, "models", "register", str(loose), "iris", "--registry", root)
    assert (code, out.strip()) == (0, "Registered iris:3"), err
    code, out, err = run_cli(capsys, "models", "delete", "iris", "1", "--yes", "--registry", root)
    assert (code, out.strip()) == (0, "Deleted iris version(s) 1"), err
    assert [mv.version for mv in pickle.loads(pickle.dumps(registry)).list()] == [2, 3]


def test_a_tampered_object_is_refused(root, centroid_model):
    registry = Registry(root)
    first = registry.register(centroid_model, "iris", sign="k" * 32)
    second = registry.register(centroid_model, "iris", sign="k" * 32)
    filesystem, _ = _filesystem(root)

    def path(mv, name: str) -> str:
        return f"{str(mv.path).partition('?')[0].removeprefix('s3://')}/{name}"

    assert registry.load("iris:2", signing_key="k" * 32).classes_.tolist() == ["ant", "bee", "cat"]

    # A payload file changed in the bucket: its hash no longer matches model.json.
    with filesystem.open_output_stream(path(second, "arrays.npz")) as stream:
        stream.write(b"not the arrays")
    with pytest.raises(ArtifactError, match="arrays.npz"):
        registry.load("iris:2", signing_key="k" * 32)

    # A rollback: version 1's (validly signed) files copied over version 2's.
    for name in ("arrays.npz", "model.json", "signature"):
        filesystem.copy_file(path(first, name), path(second, name))
    with pytest.raises(ArtifactError, match="does not match the registry index"):
        registry.load("iris:2", signing_key="k" * 32)
    with pytest.raises(ArtifactError, match="does not match the registry index"):
        sl.load(str(second.path), signing_key="k" * 32)  # the artifact's own URI too
    results = dict((mv.version, error) for mv, error in registry.verify(signing_key="k" * 32))
    assert results[1] is None and "does not match" in results[2]


def test_references_stages_and_deletion_on_s3(root, centroid_model):
    registry = Registry(root)
    for _ in range(3):
        registry.register(centroid_model, "iris")
    registry.promote("iris", 2, "staging")
    reference = root.replace("/models?", "/models/iris@staging?")
    assert sl.load(reference).classes_.tolist() == ["ant", "bee", "cat"]
    assert registry.resolve("iris@staging").version == 2
    assert registry.delete("iris", 3) == [3]
    assert [mv.version for mv in registry.list("iris")] == [1, 2]
    assert registry.register(centroid_model, "iris").version == 4  # 3 is never reused
    with pytest.raises(ArtifactError, match="has no version 3"):
        registry.get("iris", 3)


def test_a_file_uri_root_uses_the_object_layout_with_exclusive_creates(tmp_path, centroid_model):
    root = f"file://{tmp_path}/models"
    registry = Registry(root)
    assert [registry.register(centroid_model, "iris").version for _ in range(2)] == [1, 2]
    assert not (tmp_path / "models" / "index.sqlite").exists()
    assert sorted(p.name for p in (tmp_path / "models" / "iris" / "versions").iterdir()) == [
        "0000000001.json",
        "0000000002.json",
    ]
    (tmp_path / "models" / "iris" / "versions" / "0000000003.json").write_text("{}")
    with pytest.raises(ArtifactError, match="not a valid registry version record"):
        registry.list("iris")  # a record is untrusted input: checked field by field


def test_a_commit_whose_response_was_lost_keeps_its_number(root, centroid_model, monkeypatch):
    # S3 applied the PUT but the response never arrived; the client's retry gets 412. The
    # writer must recognise its own record rather than take a second version number.
    from shardlearn.registry import _object_index

    create = _object_index.ObjectStore.create

    def applied_but_answered_412(self, relative, data):
        return create(self, relative, data) and "/versions/" not in relative

    registry = Registry(root)
    monkeypatch.setattr(_object_index.ObjectStore, "create", applied_but_answered_412)
    assert registry.register(centroid_model, "iris", stage="staging").version == 1
    monkeypatch.undo()
    assert [(mv.version, mv.stage) for mv in registry.list("iris")] == [(1, "staging")]
    assert registry.orphans() == []


def test_train_register_and_evaluate_take_an_s3_registry_from_the_cli(root, capsys, tmp_path):
    """``--registry s3://...`` reaches the registry whole (a Path option turned it into s3:/)."""
    import numpy as np
    import pyarrow as pa

    from shardlearn.data import write_dataset

    rng = np.random.default_rng(0)
    income = rng.normal(50.0, 10.0, 300)
    table = pa.table({"income": income, "bought": np.where(income > 50, "yes", "no")})
    data = tmp_path / "shop"
    write_dataset(table, data, label="bought", partitions=2, split=(0.7, 0.3, 0.0))
    code, out, err = run_cli(
        capsys, "train", str(data), "--model", "gaussian_nb", "--workers", "1",
        "--out", str(tmp_path / "nb"), "--register", "shop", "--registry", root,
    )  # fmt: skip
    assert code == 0, err
    assert "Registered shop:1" in out
    assert [mv.version for mv in Registry(root).list("shop")] == [1]
    code, out, err = run_cli(
        capsys, "evaluate", "shop:1", str(data), "--split", "valid", "--registry", root,
        "--workers", "1", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    assert 0.9 <= json.loads(out)["metrics"]["accuracy"] <= 1.0
