"""The artifact format: round trip, integrity, signatures, encryption, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import registry_helpers

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import crypto, load, read_artifact, save

SIGNING_KEY = "k" * 32
ENCRYPTION_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_round_trip_gives_bit_identical_predictions(centroid_model, tmp_path):
    X, _ = registry_helpers.make_data(n=40, seed=5)
    path = save(centroid_model, tmp_path / "m")
    loaded = load(path)
    assert type(loaded) is registry_helpers.CentroidClassifier
    assert np.array_equal(loaded.predict_proba(X), centroid_model.predict_proba(X))
    assert np.array_equal(loaded.predict(X), centroid_model.predict(X))
    assert loaded.classes_.dtype == centroid_model.classes_.dtype
    assert loaded.temperature == centroid_model.temperature


def test_model_json_records_what_the_model_is(centroid_model, tmp_path):
    path = save(
        centroid_model,
        tmp_path / "m",
        metrics={"accuracy": 0.9},
        lineage={"dataset_manifest_sha256": "ab" * 32, "engine": "local", "workers": 2},
    )
    header = json.loads((path / "model.json").read_text())
    assert header["format"] == "shardlearn-model" and header["format_version"] == 1
    assert header["model"]["type"] == "CentroidClassifier"
    assert header["model"]["meta"]["params"] == {"temperature": 2.0}
    assert header["classes"] == ["ant", "bee", "cat"]
    assert [c["name"] for c in header["input_schema"]["columns"]] == ["f0", "f1", "f2", "f3"]
    assert header["metrics"] == {"accuracy": 0.9}
    assert header["dataset_manifest_sha256"] == "ab" * 32
    assert header["training"] == {"engine": "local", "workers": 2}
    assert header["lineage"]["params"] == {"temperature": 2.0}
    assert {"python", "numpy", "shardlearn"} <= set(header["library_versions"])
    assert header["created_at"].endswith("+00:00")
    listed = set(header["files"])
    assert listed == {"arrays.npz", "files/temperature.bin"}
    for name, entry in header["files"].items():
        assert entry["sha256"] == crypto.sha256_file(path / name)


def test_arrays_are_stored_without_pickle(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m")
    with np.load(path / "arrays.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {"centroids", "classes", "feature_names"}


def test_object_arrays_are_refused_because_they_would_need_pickle(centroid_model, tmp_path):
    centroid_model.classes_ = centroid_model.classes_.astype(object)
    with pytest.raises(ArtifactError, match="'classes' has dtype object"):
        save(centroid_model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_existing_path_is_not_overwritten_by_default(centroid_model, tmp_path):
    save(centroid_model, tmp_path / "m")
    with pytest.raises(ArtifactError, match="already exists"):
        save(centroid_model, tmp_path / "m")
    centroid_model.temperature = 3.0
    save(centroid_model, tmp_path / "m", overwrite=True)
    assert load(tmp_path / "m").temperature == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp directories left behind


def test_a_directory_without_model_json_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot find model|not a model artifact"):
        load(tmp_path)


def test_newer_format_version_is_refused_with_advice(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m")
    header = json.loads((path / "model.json").read_text())
    header["format_version"] = 99
    (path / "model.json").write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match="format version 99.*Upgrade shardlearn"):
        load(path)


def test_unknown_model_type_names_the_known_ones(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m")
    header = json.loads((path / "model.json").read_text())
    header["model"]["type"] = "os.system"
    header["model"]["module"] = "os"
    (path / "model.json").write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match="unknown model type|'os.system'"):
        load(path)


def test_unlisted_file_is_refused(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m")
    (path / "files" / "payload.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(ArtifactError, match="unexpected file files/payload.pkl"):
        load(path)


def test_missing_file_is_named(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m")
    (path / "arrays.npz").unlink()
    with pytest.raises(ArtifactError, match="arrays.npz is missing"):
        load(path)


# -- signatures --------------------------------------------------------------------------------


def test_signed_artifact_loads_with_the_key(centroid_model, tmp_path, monkeypatch):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    path = save(centroid_model, tmp_path / "m")
    assert (path / "signature").read_bytes().startswith(b"hmac-sha256:")
    artifact = read_artifact(path)
    assert artifact.signed and artifact.signature_verified
    assert artifact.to_model().temperature == 2.0


def test_flipping_any_byte_of_a_signed_artifact_is_refused_naming_the_file(
    centroid_model, tmp_path, monkeypatch
):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    path = save(centroid_model, tmp_path / "m")
    files = _files(path)
    assert {p.name for p in files} == {"model.json", "arrays.npz", "temperature.bin", "signature"}
    flips = 0
    rng = np.random.default_rng(0)
    for file in files:
        original = file.read_bytes()
        relative = file.relative_to(path).as_posix()
        # Every byte of small files; first, last and 300 seeded positions of larger ones.
        positions = range(len(original))
        if len(original) > 400:
            positions = sorted({0, len(original) - 1, *rng.integers(0, len(original), 300)})
        for position in positions:
            tampered = bytearray(original)
            tampered[position] ^= 0xFF
            file.write_bytes(bytes(tampered))
            with pytest.raises(ArtifactError) as caught:
                load(path)
            assert relative in str(caught.value), (relative, position, str(caught.value))
            flips += 1
        file.write_bytes(original)
    assert flips > 500
    assert load(path).temperature == 2.0  # restored bytes load again


def test_unsigned_artifact_is_refused_when_a_key_is_configured(
    centroid_model, tmp_path, monkeypatch
):
    path = save(centroid_model, tmp_path / "m")
    assert not (path / "signature").exists()
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    with pytest.raises(ArtifactError, match="unsigned .*signing key is configured"):
        load(path)


def test_signature_made_with_another_key_is_refused(centroid_model, tmp_path, monkeypatch):
    path = save(centroid_model, tmp_path / "m", sign="another-key-of-32-bytes-long-xxx")
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    with pytest.raises(ArtifactError, match="signature check failed .*another key"):
        load(path)


def test_signing_key_from_a_key_file(centroid_model, tmp_path, monkeypatch):
    key_file = tmp_path / "signing.key"
    key_file.write_text(SIGNING_KEY + "\n")
    monkeypatch.setenv(crypto.SIGNING_KEY_FILE_ENV, str(key_file))
    path = save(centroid_model, tmp_path / "m")
    assert crypto.signature_matches(
        (path / "model.json").read_bytes(), (path / "signature").read_bytes(), SIGNING_KEY.encode()
    )
    assert read_artifact(path).signature_verified


def test_short_signing_key_is_refused_with_advice(monkeypatch):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, "short")
    with pytest.raises(ArtifactError, match="too short.*token_hex"):
        crypto.signing_key()


def test_sign_true_without_a_key_is_a_clear_error(centroid_model, tmp_path):
    with pytest.raises(ArtifactError, match="sign=True but no signing key.*SHARDLEARN_SIGNING_KEY"):
        save(centroid_model, tmp_path / "m", sign=True)


def test_missing_key_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(crypto.SIGNING_KEY_FILE_ENV, str(tmp_path / "nope.key"))
    with pytest.raises(ArtifactError, match="nope.key"):
        crypto.signing_key()


# -- encryption --------------------------------------------------------------------------------


def test_encrypted_round_trip_and_nothing_readable_at_rest(centroid_model, tmp_path, monkeypatch):
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    X, _ = registry_helpers.make_data(n=20, seed=1)
    path = save(centroid_model, tmp_path / "m")
    header = json.loads((path / "model.json").read_text())
    assert header["encryption"]["algorithm"] == "AES-256-GCM"
    assert "classes" not in header and "model" not in header
    for file in _files(path):
        assert b"CentroidClassifier" not in file.read_bytes()
        assert b"ant" not in file.read_bytes() or file.name == "model.json"
    with pytest.raises(ValueError):
        np.load(path / "arrays.npz", allow_pickle=False)
    loaded = load(path)
    assert np.array_equal(loaded.predict_proba(X), centroid_model.predict_proba(X))


def test_wrong_encryption_key_is_a_clear_error(centroid_model, tmp_path, monkeypatch):
    path = save(centroid_model, tmp_path / "m", encrypt=ENCRYPTION_KEY)
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, crypto.generate_key())
    with pytest.raises(ArtifactError, match="wrong encryption key .*fingerprint"):
        load(path)


def test_wrong_key_never_yields_garbage_even_without_the_fingerprint(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m", encrypt=ENCRYPTION_KEY)
    header = json.loads((path / "model.json").read_text())
    header["encryption"]["key_fingerprint"] = None
    (path / "model.json").write_text(json.dumps(header))
    with pytest.raises(ArtifactError, match="cannot decrypt .*wrong encryption key"):
        read_artifact(path, encryption_key=crypto.generate_key())


def test_encrypted_artifact_without_a_key_says_which_variable_to_set(centroid_model, tmp_path):
    path = save(centroid_model, tmp_path / "m", encrypt=ENCRYPTION_KEY)
    with pytest.raises(ArtifactError, match="is encrypted: set SHARDLEARN_ENCRYPTION_KEY"):
        load(path)


def test_ciphertexts_cannot_be_swapped_between_files():
    key = bytes(range(32))
    binding = {"artifact_id": "a1", "format_version": 1}
    blob = crypto.encrypt_bytes(b"payload", key, "arrays.npz", **binding)
    assert crypto.decrypt_bytes(blob, key, "arrays.npz", **binding) == b"payload"
    with pytest.raises(ArtifactError, match="cannot decrypt files/x.bin"):
        crypto.decrypt_bytes(blob, key, "files/x.bin", **binding)


@pytest.mark.parametrize(
    "text",
    [ENCRYPTION_KEY, "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=", ENCRYPTION_KEY.upper()],
)
def test_encryption_key_accepts_hex_and_base64(text):
    assert crypto.encryption_key(text) == bytes.fromhex(ENCRYPTION_KEY)


def test_encryption_key_of_the_wrong_length_is_refused(monkeypatch):
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, "abcd")
    with pytest.raises(ArtifactError, match="SHARDLEARN_ENCRYPTION_KEY is not a 256-bit key"):
        crypto.encryption_key()


def test_encryption_key_file_with_raw_bytes(tmp_path, monkeypatch):
    raw = bytes(range(200, 232))
    (tmp_path / "enc.key").write_bytes(raw)
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_FILE_ENV, str(tmp_path / "enc.key"))
    assert crypto.encryption_key() == raw


def test_signed_and_encrypted_artifact_flipped_byte_is_refused(
    centroid_model, tmp_path, monkeypatch
):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, SIGNING_KEY)
    monkeypatch.setenv(crypto.ENCRYPTION_KEY_ENV, ENCRYPTION_KEY)
    path = save(centroid_model, tmp_path / "m")
    assert load(path).temperature == 2.0
    target = path / "meta.json"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="meta.json"):
        load(path)
