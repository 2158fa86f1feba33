"""``shardlearn search`` in a real terminal (a pseudo-terminal rendered by pyte): the live
leaderboard is replaced by the final one, which the screen shows exactly once -- also when the
trials' models draw progress bars of their own (boosting rounds), which pushed a live view
drawn on another stream down the screen, one leaderboard copy per trial."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from shardlearn.testing import SYNC_TIMEOUT

pyte = pytest.importorskip("pyte")

ROWS, COLUMNS = 24, 140
TITLE = "search leaderboard (roc_auc)"


def _screen_after(argv: list[str]) -> str:
    """Run ``argv`` on a pseudo-terminal; the text of the final screen and its scrollback."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "SHARDLEARN_PROGRESS"}
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert process.wait(SYNC_TIMEOUT) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        process.kill()
        process.wait()
        os.close(master)
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
    pyte.Stream(screen).feed(b"".join(chunks).decode("utf-8", "replace"))
    scrolled = ["".join(line[c].data for c in sorted(line)) for line in screen.history.top]
    return "\n".join(scrolled + list(screen.display))


def test_the_leaderboard_shows_once_in_a_terminal(split_dataset, tmp_path):
    code = "import sys; from shardlearn.cli import main; sys.argv[0] = 'shardlearn'; main()"
    space = tmp_path / "space.yaml"
    space.write_text("n_estimators: 9\nmax_depth: [2, 3, 4]\n")
    args = ["search", split_dataset.uri, "--model", "xgboost", "--space", str(space),
            "--strategy", "asha", "--trials", "9", "--workers", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    text = _screen_after([sys.executable, "-c", code, *args])
    assert text.count(TITLE) == 1, text
    assert "best: xgboost" in text
