"""Model names and references are whole-string matches: a trailing newline is not a name."""

from __future__ import annotations

import pytest

from shardlearn.exceptions import ArtifactError
from shardlearn.registry import Registry, save
from shardlearn.testing import run_cli

# Issue #21 finding 11: "$" in the name pattern matched before a final "\n", so "loans\n" was
# registered (and a folder "loans\n" created).
BAD_NAMES = ["loans\n", "loans\r\n", "\nloans", "lo\nans", "loans ", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_register_refuses_a_name_with_a_newline_or_space(tmp_path, centroid_model, name):
    registry = Registry(tmp_path / "models")
    with pytest.raises(ArtifactError, match=r"invalid model name"):
        registry.register(centroid_model, name)
    assert registry.names() == []
    assert [p for p in tmp_path.rglob("*") if not p.name.isprintable() or " " in p.name] == []


def test_references_with_a_trailing_newline_are_refused(tmp_path, centroid_model):
    registry = Registry(tmp_path / "models")
    registry.register(centroid_model, "loans", stage="production")
    assert registry.resolve("loans:1").ref == "loans:1"
    for ref in ("loans\n", "loans:1\n", "loans@production\n"):
        with pytest.raises(ArtifactError, match=r"invalid|unknown stage"):
            registry.resolve(ref)


def test_cli_models_register_refuses_a_name_with_a_newline(capsys, tmp_path, centroid_model):
    artifact = save(centroid_model, tmp_path / "model")
    registry = tmp_path / "models"
    code, _, err = run_cli(
        capsys, "models", "register", str(artifact), "loans\n", "--registry", str(registry)
    )
    assert code == 1 and "Traceback" not in err
    assert "invalid model name 'loans\\n'" in err
    assert Registry(registry).names() == []
