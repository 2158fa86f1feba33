"""Fixtures of the registry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import registry_helpers

from shardlearn.registry import crypto


@pytest.fixture(autouse=True)
def no_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with no signing or encryption key in the environment."""
    for variable in (
        crypto.SIGNING_KEY_ENV,
        crypto.SIGNING_KEY_FILE_ENV,
        crypto.ENCRYPTION_KEY_ENV,
        crypto.ENCRYPTION_KEY_FILE_ENV,
        crypto.PRIVATE_KEY_FILE_ENV,
        crypto.PUBLIC_KEY_ENV,
        crypto.PUBLIC_KEY_FILE_ENV,
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def centroid_model() -> Iterator[registry_helpers.CentroidClassifier]:
    """A fitted CentroidClassifier, registered as a model type for the duration of the test."""
    registry_helpers.install()
    yield registry_helpers.fitted_model()
    registry_helpers.uninstall()
