"""Artifacts at pyarrow.fs URIs, against a real S3 API (moto's server on a local port)."""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest
import registry_helpers

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import Registry, crypto, is_artifact, load, read_artifact, save

pytest.importorskip("moto.server")  # s3_endpoint and s3_bucket: tests/conftest.py


@pytest.fixture
def s3_uri(s3_endpoint, s3_bucket, request):
    bucket = f"models-{request.node.name.replace('_', '-')[:40].lower()}"
    query = f"endpoint_override={s3_endpoint}&scheme=http&allow_bucket_creation=true"

    def uri(path: str) -> str:
        return f"s3://{bucket}/{path}?{query}"

    s3_bucket(bucket)
    return uri


def test_signed_artifact_round_trips_through_s3(centroid_model, s3_uri, monkeypatch):
    monkeypatch.setenv(crypto.SIGNING_KEY_ENV, "r" * 32)
    uri = s3_uri("team/centroid")
    assert save(centroid_model, uri) == uri
    assert is_artifact(uri)
    X, _ = registry_helpers.make_data(n=25, seed=2)
    loaded = load(uri)
    assert np.array_equal(loaded.predict_proba(X), centroid_model.predict_proba(X))
    artifact = read_artifact(uri)
    assert artifact.signature_verified and artifact.path == uri
    with pytest.raises(ArtifactError, match="already exists"):
        save(centroid_model, uri)
    centroid_model.temperature = 4.0
    save(centroid_model, uri, overwrite=True)
    assert load(uri).temperature == 4.0


def test_tampered_remote_file_is_named_with_the_uri(centroid_model, s3_uri):
    uri = s3_uri("team/tampered")
    save(centroid_model, uri, sign="t" * 32)
    filesystem, root = pafs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(f"{root}/arrays.npz") as stream:
        data = bytearray(stream.read())
    data[10] ^= 0xFF
    with filesystem.open_output_stream(f"{root}/arrays.npz") as stream:
        stream.write(bytes(data))
    with pytest.raises(ArtifactError, match=r"arrays.npz in s3://.*team/tampered"):
        load(uri)


def test_registry_root_on_a_store_without_conditional_creates_is_refused():
    # s3:// roots work (tests/registry/test_object_store_registry.py); a store where shardlearn
    # cannot create an object only if absent could hand one version number out twice.
    with pytest.raises(ArtifactError, match="create an object only if it is absent"):
        Registry("mock:///models")


def test_registry_adds_an_artifact_from_a_uri(centroid_model, s3_uri, tmp_path):
    uri = s3_uri("team/shared")
    save(centroid_model, uri)
    registry = Registry(tmp_path / "models")
    mv = registry.add_artifact(uri, "shared", stage="staging")
    assert (mv.version, mv.stage, mv.model_type) == (1, "staging", "CentroidClassifier")
    assert registry.load("shared@staging").temperature == centroid_model.temperature
