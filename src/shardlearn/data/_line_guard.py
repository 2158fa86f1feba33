"""A byte stream that lets only lines a parser can take through: the CSV reader's slow path.

pyarrow's CSV reader refuses a whole file for one line it cannot hold (longer than about a
block) or one field that is not UTF-8. :class:`LineGuard` sits between the file and the parser
and replaces each such line by an empty line, so physical line numbers are unchanged and the
parser sees a blank row there; it records the line's number, the reason and the start of its
text in :attr:`LineGuard.refused`, and the reader turns that blank row into a reject.

Only whole lines are handed on: the start of the current line is held back (at most ``limit``
bytes) until its newline arrives, so a line is known to be too long before any of it is
emitted. Clean chunks cost one ``bytes.decode`` (the UTF-8 check) and one newline count; only a
chunk that fails is split into lines.
"""

from __future__ import annotations

import io

import pyarrow as pa

__all__ = ["LineGuard", "REFUSED_TEXT_CHARS"]

REFUSED_TEXT_CHARS = 200  # characters of a refused line kept in the rejects (not 50 MB of it)


class LineGuard(io.RawIOBase):
    """Whole lines of ``raw``; an over-long or undecodable line becomes an empty line.

    Parameters
    ----------
    raw : file-like
        The source bytes (``read(n)``).
    limit : int
        Longest line accepted, in bytes with its newline.
    first_line : int
        Physical line number of the first line ``raw`` delivers.
    """

    def __init__(self, raw: pa.NativeFile | io.RawIOBase, limit: int, first_line: int) -> None:
        self.raw = raw
        self.limit = limit
        self.line = first_line  # number of the next line to be completed
        self.partial = b""  # start of the current line (never longer than ``limit``)
        self.skipped = 0  # bytes of an over-long line seen so far (0: not in one)
        self._long_start = b""  # the start of that line, for the reject
        self.ready = memoryview(b"")
        self.eof = False
        self.refused: dict[int, tuple[str, str]] = {}  # line -> (reason, start of its text)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self.ready and not self.eof:
            self.ready = memoryview(self._next_lines())
        size = min(len(buffer), len(self.ready))
        buffer[:size] = self.ready[:size]
        self.ready = self.ready[size:]
        return size

    def _next_lines(self) -> bytes:
        chunk = self.raw.read(max(self.limit, 1 << 16))
        if not chunk:
            self.eof = True
            if self.skipped:
                self._refuse_long(self.skipped)
                return b"\n"
            tail, self.partial = self.partial, b""
            return self._checked(tail + b"\n") if tail else b""
        head = b""
        if self.skipped:
            end = chunk.find(b"\n")
            if end < 0:
                self.skipped += len(chunk)
                return b""
            self._refuse_long(self.skipped + end + 1)
            head, chunk = b"\n", chunk[end + 1 :]
        data = self.partial + chunk
        last = data.rfind(b"\n")
        complete, self.partial = data[: last + 1], data[last + 1 :]
        if len(self.partial) >= self.limit:
            self.skipped, self.partial = len(self.partial), b""
            self._long_start = data[last + 1 : last + 1 + 4 * REFUSED_TEXT_CHARS]
        return head + (self._checked(complete) if complete else b"")

    def _checked(self, complete: bytes) -> bytes:
        """``complete`` (whole lines) with every line the parser cannot take emptied."""
        if len(complete) <= self.limit:
            try:
                complete.decode("utf-8")
                self.line += complete.count(b"\n")
                return complete
            except UnicodeDecodeError:
                pass
        kept = []
        for text in complete.split(b"\n")[:-1]:
            reason = None
            if len(text) + 1 > self.limit:
                reason = f"line of {len(text) + 1} bytes, longer than the {self.limit}-byte limit"
            else:
                try:
                    text.decode("utf-8")
                except UnicodeDecodeError as error:
                    reason = (
                        f"not valid UTF-8 (byte 0x{text[error.start]:02x} at byte "
                        f"{error.start + 1} of the line)"
                    )
            if reason is None:
                kept.append(text)
            else:
                self.refused[self.line] = (reason, _preview(text))
                kept.append(b"")
            self.line += 1
        return b"\n".join(kept) + b"\n"

    def _refuse_long(self, length: int) -> None:
        self.refused[self.line] = (
            f"line of {length} bytes, longer than the {self.limit}-byte limit",
            _preview(self._long_start),
        )
        self.line += 1
        self.skipped = 0


def _preview(text: bytes) -> str:
    shown = text[: 4 * REFUSED_TEXT_CHARS].decode("utf-8", "replace")
    return shown if len(shown) <= REFUSED_TEXT_CHARS else shown[:REFUSED_TEXT_CHARS] + "…"
