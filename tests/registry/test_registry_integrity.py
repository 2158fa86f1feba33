"""Registry integrity wherever a version is loaded, the signing/encryption policy, AES-GCM
binding to the artifact, and Ed25519 signatures (issue #21, finding 2).

Everything is real: an SQLite-indexed registry in a temporary folder, real keys, the real CLI.
"""

from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pyarrow as pa
import pytest
import registry_helpers

import shardlearn as sl
from shardlearn.data import write_dataset
from shardlearn.engine import engine
from shardlearn.exceptions import ArtifactError
from shardlearn.preprocess import Preprocessor
from shardlearn.registry import Registry, crypto, load, read_artifact, save
from shardlearn.testing import run_cli

SIGNING_KEY = "0123456789abcdef0123456789abcdef"
ENCRYPTION_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
INDEX_MISMATCH = "does not match the registry index"


def _table(n: int = 200, seed: int = 0, flip: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "blue"], n)
    positive = (x + (color == "red") > 0.5) != flip
    return pa.table({"x": x, "color": color, "y": np.where(positive, "yes", "no")})


def _pipeline(flip: bool) -> sl.Pipeline:
    with engine("local", workers=1):
        pre = Preprocessor({"x": "numeric", "color": "categorical"}, label="y")
        return sl.Pipeline(pre, sl.LogisticRegression()).fit(_table(flip=flip), "y")


@pytest.fixture(scope="module")
def versions() -> tuple[sl.Pipeline, sl.Pipeline]:
    """Version 1 learned the opposite labels of version 2, so a rollback is plain to see."""
    return _pipeline(flip=True), _pipeline(flip=False)


@pytest.fixture
def rolled_back(tmp_path, versions, monkeypatch):
    """A signed registry whose production directory (x/2) was overwritten by a copy of x/1."""
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    registry = Registry(tmp_path / "reg")
    registry.register(versions[0], "x")
    registry.register(versions[1], "x", stage="production")
    shutil.rmtree(tmp_path / "reg" / "x" / "2")
    shutil.copytree(tmp_path / "reg" / "x" / "1", tmp_path / "reg" / "x" / "2")
    return registry


def _one_line_error(code: int, err: str) -> str:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


# -- finding 2: a rolled-back version directory ----------------------------------------------


def test_rollback_copy_is_refused_by_load_of_a_stage_reference(rolled_back, tmp_path):
    with pytest.raises(ArtifactError, match=INDEX_MISMATCH):
        sl.load(f"{tmp_path}/reg/x@production")
    with pytest.raises(ArtifactError, match=INDEX_MISMATCH):
        sl.load(f"{tmp_path}/reg/x:2")


def test_rollback_copy_is_refused_when_loaded_by_its_directory(rolled_back, tmp_path):
    with pytest.raises(ArtifactError, match=INDEX_MISMATCH):
        sl.load(tmp_path / "reg" / "x" / "2")
    # The untouched version still loads by path, and the copy outside the registry is just
    # a (validly signed) artifact of its own.
    assert sl.load(tmp_path / "reg" / "x" / "1") is not None
    shutil.copytree(tmp_path / "reg" / "x" / "2", tmp_path / "exported")
    assert sl.load(tmp_path / "exported") is not None


def test_rollback_copy_is_refused_by_cli_predict(rolled_back, tmp_path, capsys):
    rows = _table(n=20, seed=5).drop(["y"])
    (tmp_path / "new.csv").write_text(
        "x,color\n" + "".join(f"{r['x']},{r['color']}\n" for r in rows.to_pylist())
    )
    code, _, err = run_cli(
        capsys, "predict", f"{tmp_path}/reg/x@production", str(tmp_path / "new.csv"),
        "--out", str(tmp_path / "p.parquet"), "--workers", "1",
    )  # fmt: skip
    assert INDEX_MISMATCH in _one_line_error(code, err)
    assert not (tmp_path / "p.parquet").exists()


def test_rollback_copy_is_refused_by_cli_evaluate(rolled_back, tmp_path, capsys):
    dataset = write_dataset(_table(n=200, seed=7), tmp_path / "ds", label="y", partitions=2)
    code, _, err = run_cli(
        capsys, "evaluate", f"{tmp_path}/reg/x@production", str(dataset.uri),
        "--split", "train", "--workers", "1",
    )  # fmt: skip
    assert INDEX_MISMATCH in _one_line_error(code, err)


def test_registry_references_load_when_nothing_was_replaced(tmp_path, versions, monkeypatch):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    registry = Registry(tmp_path / "reg")
    registry.register(versions[0], "x")
    registry.register(versions[1], "x", stage="production")
    rows = _table(n=30, seed=3)
    loaded = sl.load(f"{tmp_path}/reg/x@production")
    assert loaded.predict(rows).tolist() == versions[1].predict(rows).tolist()


# -- signing and encryption policy -----------------------------------------------------------


def test_unsigned_artifact_is_refused_under_a_signing_key_unless_allowed(
    centroid_model, tmp_path, monkeypatch
):
    path = save(centroid_model, tmp_path / "m")
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    with pytest.raises(ArtifactError, match="unsigned.*--allow-unsigned"):
        load(path)
    assert load(path, allow_unsigned=True).classes_.tolist() == ["ant", "bee", "cat"]


def test_plaintext_is_refused_under_an_encryption_key_unless_allowed(
    centroid_model, tmp_path, monkeypatch
):
    registry = Registry(tmp_path / "reg")
    registry.register(centroid_model, "plain", stage="production")
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    with pytest.raises(ArtifactError, match="not encrypted.*--allow-unencrypted"):
        load(f"{tmp_path}/reg/plain@production")
    with pytest.raises(ArtifactError, match="not encrypted"):
        load(tmp_path / "reg" / "plain" / "1")
    X, _ = registry_helpers.make_data(n=10, seed=2)
    allowed = load(f"{tmp_path}/reg/plain@production", allow_unencrypted=True)
    assert np.array_equal(allowed.predict_proba(X), centroid_model.predict_proba(X))
    # A server sets the policy once, on its registry.
    served = Registry(tmp_path / "reg", allow_unencrypted=True).load("plain@production")
    assert np.array_equal(served.predict_proba(X), centroid_model.predict_proba(X))


def test_plaintext_is_refused_by_cli_predict_under_an_encryption_key(
    tmp_path, versions, monkeypatch, capsys
):
    Registry(tmp_path / "reg").register(versions[1], "x", stage="production")
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    (tmp_path / "new.csv").write_text("x,color\n0.5,red\n-1.0,blue\n")
    command = ["predict", f"{tmp_path}/reg/x@production", str(tmp_path / "new.csv"),
               "--out", str(tmp_path / "p.parquet"), "--workers", "1"]  # fmt: skip
    code, _, err = run_cli(capsys, *command)
    assert "not encrypted" in _one_line_error(code, err)
    code, out, err = run_cli(capsys, *command, "--allow-unencrypted")
    assert code == 0, err
    assert "rows_predicted=2" in out


def _swap_file(source, target, name: str) -> None:
    """Copy ``name`` from one artifact into another and fix the target's listed hash, as an
    attacker with write access to an unsigned artifact can."""
    shutil.copyfile(source / name, target / name)
    header = json.loads((target / "model.json").read_text())
    header["files"][name]["sha256"] = crypto.sha256_file(target / name)
    header["files"][name]["bytes"] = (target / name).stat().st_size
    (target / "model.json").write_text(json.dumps(header))


def test_encrypted_file_moved_between_artifacts_is_refused(tmp_path, monkeypatch):
    registry_helpers.install()
    try:
        monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
        first = save(registry_helpers.fitted_model(seed=0), tmp_path / "a")
        second = save(registry_helpers.fitted_model(seed=1), tmp_path / "b")
        _swap_file(first, second, "arrays.npz")
        with pytest.raises(ArtifactError, match="cannot decrypt arrays.npz.*another artifact"):
            load(second)
    finally:
        registry_helpers.uninstall()


def _as_previous_format(path, key: bytes) -> None:
    """Rewrite an encrypted artifact as the previous format wrote it: ``SLENC1`` files with the
    file name alone as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = json.loads((path / "model.json").read_text())
    binding = {"artifact_id": header.pop("artifact_id"), "format_version": 1}
    for name in header["files"]:
        plain = crypto.decrypt_bytes((path / name).read_bytes(), key, name, **binding)
        nonce = bytes(12)
        blob = b"SLENC1\x00" + nonce + AESGCM(key).encrypt(nonce, plain, name.encode())
        (path / name).write_bytes(blob)
        header["files"][name] = {"sha256": crypto.sha256_bytes(blob), "bytes": len(blob)}
    (path / "model.json").write_text(json.dumps(header))


def test_previous_encryption_format_is_read_only_when_authenticated(
    centroid_model, tmp_path, monkeypatch
):
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    path = save(centroid_model, tmp_path / "m")
    _as_previous_format(path, bytes.fromhex(ENCRYPTION_KEY))
    with pytest.raises(ArtifactError, match="older shardlearn.*re-register"):
        load(path)
    # Signed, model.json pins every ciphertext's hash, so the old binding is enough.
    (path / "signature").write_bytes(crypto.sign((path / "model.json").read_bytes(), b"k" * 16))
    X, _ = registry_helpers.make_data(n=10, seed=2)
    loaded = load(path, signing_key=b"k" * 16)
    assert np.array_equal(loaded.predict_proba(X), centroid_model.predict_proba(X))


def test_previous_encryption_format_in_a_registry_is_read_through_its_index(
    centroid_model, tmp_path, monkeypatch
):
    import sqlite3

    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    mv = Registry(tmp_path / "reg").register(centroid_model, "old")
    _as_previous_format(mv.path, bytes.fromhex(ENCRYPTION_KEY))
    digest = crypto.sha256_file(mv.path / "model.json")
    with sqlite3.connect(tmp_path / "reg" / "index.sqlite") as index:  # as the old version wrote
        index.execute("UPDATE versions SET artifact_sha256 = ?", (digest,))
    index.close()
    X, _ = registry_helpers.make_data(n=10, seed=2)
    loaded = load(f"{tmp_path}/reg/old:1")
    assert np.array_equal(loaded.predict_proba(X), centroid_model.predict_proba(X))
    with pytest.raises(ArtifactError, match="re-register"):
        read_artifact(mv.path)  # outside the registry nothing vouches for model.json


# -- Ed25519 ----------------------------------------------------------------------------------


@pytest.fixture
def key_pair(tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "models", "keygen", "--ed25519", "--out", str(tmp_path / "keys" / "signing")
    )
    assert code == 0, err
    private, public = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    return private, public


def test_keygen_writes_a_private_key_only_its_owner_can_read(key_pair, capsys):
    private, public = key_pair
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    code, _, err = run_cli(capsys, "models", "keygen", "--ed25519", "--out", str(private)[:-4])
    assert "already exists" in _one_line_error(code, err)


def test_ed25519_signs_with_private_and_verifies_with_public_alone(
    centroid_model, key_pair, tmp_path, monkeypatch
):
    private, public = key_pair
    monkeypatch.setenv(crypto.PRIVATE_KEY_FILE_ENV, str(private))
    mv = Registry(tmp_path / "reg").register(centroid_model, "c", stage="production")
    assert (mv.path / "signature").read_bytes().startswith(b"ed25519:")
    # The serving side holds the public key only: it verifies, and it cannot sign.
    monkeypatch.delenv(crypto.PRIVATE_KEY_FILE_ENV)
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(public))
    artifact = read_artifact(mv.path, expected_sha256=mv.artifact_sha256)
    assert artifact.signature_verified
    X, _ = registry_helpers.make_data(n=10, seed=2)
    served = load(f"{tmp_path}/reg/c@production")
    assert np.array_equal(served.predict_proba(X), centroid_model.predict_proba(X))
    with pytest.raises(ArtifactError, match="sign=True but no signing key"):
        save(centroid_model, tmp_path / "forged", sign=True)


def test_ed25519_tampered_artifact_is_refused(centroid_model, key_pair, tmp_path, monkeypatch):
    private, public = key_pair
    path = save(centroid_model, tmp_path / "m", sign=private.read_text())
    header = json.loads((path / "model.json").read_text())
    header["metrics"] = {"accuracy": 1.0}
    (path / "model.json").write_text(json.dumps(header))
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(public))
    with pytest.raises(ArtifactError, match="signature check failed"):
        load(path)


def test_ed25519_wrong_public_key_is_refused(centroid_model, key_pair, tmp_path, monkeypatch):
    private, _ = key_pair
    path = save(centroid_model, tmp_path / "m", sign=private.read_bytes())
    _, other_public = crypto.generate_ed25519_keypair()
    with pytest.raises(ArtifactError, match="signature check failed"):
        load(path, public_key=other_public)
    monkeypatch.setenv(crypto.PUBLIC_KEY_ENV, other_public.decode())
    with pytest.raises(ArtifactError, match="signature check failed"):
        load(path)
    private_key = crypto.ed25519_private_key(private.read_bytes())
    with pytest.raises(ArtifactError, match="must be an Ed25519PublicKey"):
        load(path, public_key=private_key)


def test_public_key_refuses_unsigned_and_hmac_signed_artifacts(
    centroid_model, key_pair, tmp_path, monkeypatch
):
    _, public = key_pair
    unsigned = save(centroid_model, tmp_path / "unsigned")
    hmac_signed = save(centroid_model, tmp_path / "hmac", sign=SIGNING_KEY)
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(public))
    with pytest.raises(ArtifactError, match="unsigned"):
        load(unsigned)
    with pytest.raises(ArtifactError, match="signed with hmac-sha256 but no hmac-sha256 key"):
        load(hmac_signed)
    assert load(unsigned, allow_unsigned=True) is not None


def test_ed25519_registry_served_through_cli_predict(
    tmp_path, versions, key_pair, monkeypatch, capsys
):
    private, public = key_pair
    monkeypatch.setenv(crypto.PRIVATE_KEY_FILE_ENV, str(private))
    Registry(tmp_path / "reg").register(versions[1], "x", stage="production")
    monkeypatch.delenv(crypto.PRIVATE_KEY_FILE_ENV)
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(public))
    (tmp_path / "new.csv").write_text("x,color\n0.5,red\n-1.0,blue\n")
    code, out, err = run_cli(
        capsys, "predict", f"{tmp_path}/reg/x@production", str(tmp_path / "new.csv"),
        "--out", str(tmp_path / "p.parquet"), "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "rows_predicted=2" in out


def test_serve_loads_with_the_public_key_alone_and_refuses_a_rollback(
    tmp_path, versions, key_pair, monkeypatch
):
    from shardlearn.serve.host import ModelHost

    private, public = key_pair
    monkeypatch.setenv(crypto.PRIVATE_KEY_FILE_ENV, str(private))
    registry = Registry(tmp_path / "reg")
    registry.register(versions[0], "x")
    registry.register(versions[1], "x", stage="production")
    monkeypatch.delenv(crypto.PRIVATE_KEY_FILE_ENV)
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(public))
    host = ModelHost(registry, ["x@production"])
    host.load_all()
    rows = _table(n=30, seed=3)
    assert host.get("x").model.predict(rows).tolist() == versions[1].predict(rows).tolist()
    shutil.rmtree(tmp_path / "reg" / "x" / "2")
    shutil.copytree(tmp_path / "reg" / "x" / "1", tmp_path / "reg" / "x" / "2")
    with pytest.raises(ArtifactError, match=INDEX_MISMATCH):
        ModelHost(registry, ["x@production"]).load_all()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_serve_refuses_unsigned_versions_under_a_public_key_unless_allowed(
    centroid_model, key_pair, tmp_path, monkeypatch
):
    from starlette.testclient import TestClient

    from shardlearn.serve import ServeConfig, create_app

    Registry(tmp_path / "reg").register(centroid_model, "c", stage="production")
    monkeypatch.setenv(crypto.PUBLIC_KEY_FILE_ENV, str(key_pair[1]))
    options = {"registry": tmp_path / "reg", "auth": False, "reload_interval": 0}
    with pytest.raises(ArtifactError, match="unsigned.*--allow-unsigned"):
        with TestClient(create_app(ServeConfig(**options))):
            pass
    with TestClient(create_app(ServeConfig(**options, allow_unsigned=True))) as client:
        assert client.get("/readyz").status_code == 200
        assert [m["name"] for m in client.get("/v1/models").json()] == ["c"]
