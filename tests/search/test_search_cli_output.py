"""What ``shardlearn search`` prints: one leaderboard, references the CLI accepts, notes."""

from __future__ import annotations

import json

from shardlearn.testing import run_cli

SPACE = """
logistic:
  C: {loguniform: [0.01, 100]}
xgboost:
  max_depth: {randint: [3, 8]}
  learning_rate: {loguniform: [0.01, 0.3]}
"""


def test_a_space_block_for_a_model_not_searched_is_ignored_with_a_note(
    capsys, split_dataset, tmp_path
):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    code, out, err = run_cli(capsys, "search", split_dataset.uri, "--model", "logistic",
                             "--space", str(space), "--trials", "2", "--workers", "1",
                             "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0, out + err
    assert "note: space: the block for 'xgboost' is ignored" in out
    assert "one-key mapping" not in out + err


def test_the_leaderboard_is_printed_once_and_the_reference_is_one_the_cli_takes(
    capsys, split_dataset, tmp_path
):
    registry = tmp_path / "reg"
    code, out, err = run_cli(capsys, "search", split_dataset.uri, "--model", "gaussian_nb",
                             "--trials", "2", "--workers", "1", "--out", str(tmp_path / "out"),
                             "--register", "best", "--registry", str(registry))  # fmt: skip
    assert code == 0, out + err
    assert (out + err).count("search leaderboard (roc_auc)") == 1
    assert "registered as best:1" in out
    code, shown, err = run_cli(capsys, "models", "show", "best:1", "--registry", str(registry),
                               "--json")  # fmt: skip
    assert code == 0, shown + err
    assert json.loads(shown)["version"] == 1
