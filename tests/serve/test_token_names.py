"""Token names are whole-string matches: a newline in a name never reaches the token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardlearn.exceptions import ShardlearnError
from shardlearn.serve import TokenStore
from shardlearn.testing import run_cli


def test_token_create_refuses_a_name_with_a_newline_and_the_file_stays_usable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Issue #21 finding 11: --name $'ci\n' was accepted ("$" matches before a final newline);
    # the entry then spanned two lines and `serve` refused the whole token file.
    token_file = tmp_path / "tokens"
    code, out, _ = run_cli(capsys, "serve", "token", "create", "--token-file", str(token_file))
    assert code == 0
    token = out.strip().splitlines()[-1]
    before = token_file.read_bytes()
    code, _, err = run_cli(
        capsys, "serve", "token", "create", "--token-file", str(token_file), "--name", "ci\n"
    )
    assert code == 1 and "invalid token name 'ci\\n'" in err and "Traceback" not in err
    assert token_file.read_bytes() == before
    store = TokenStore(token_file)  # what `serve` reads at start-up
    assert store.names() == ["default"] and store.verify(token)


@pytest.mark.parametrize("name", ["ci\n", "ci\r\n", "\nci", "c i", "", "x" * 65])
def test_token_store_refuses_names_that_are_not_one_plain_word(tmp_path: Path, name: str) -> None:
    store = TokenStore(tmp_path / "tokens")
    with pytest.raises(ShardlearnError, match="invalid token name"):
        store.create(name)
    assert not (tmp_path / "tokens").exists()
