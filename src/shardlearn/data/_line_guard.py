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

Lines are numbered as the parser ends them (a lone ``\r`` ends one too, so a file with bare
carriage returns keeps its numbers), but cut only at ``\n``: a line to refuse that holds a lone
``\r`` (one ``\n``-line of a bare-``\r`` file is many parser lines, or a quoted value holds it)
cannot be cut into the parser's lines here, and is a :class:`DataError` instead of one reject
standing for many lines.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pyarrow as pa

from shardlearn.exceptions import DataError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

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
    path : str
        The file, for the error about a line it cannot cut or number.
    quote : bytes
        The quote character (empty: none), which makes a lone ``\r`` ambiguous.
    """

    def __init__(
        self,
        raw: pa.NativeFile | io.RawIOBase,
        limit: int,
        first_line: int,
        path: str = "the input",
        quote: bytes = b'"',
    ) -> None:
        self.raw = raw
        self.path = path
        self.quote = quote
        # A lone \r seen beside a quote: it may sit in a quoted value (no line end), so the
        # numbers of the lines after it are uncertain and refusing one of them is an error.
        self._uncertain = False
        self.limit = limit
        self.line = first_line  # number of the next line to be completed
        self.partial = b""  # start of the current line (never longer than ``limit``)
        self.skipped = 0  # bytes of an over-long line seen so far (0: not in one)
        self._long_start = b""  # the start of that line, for the reject
        self._long_lone = 0  # lone carriage returns in that line so far
        self._long_cr = False  # whether its part so far ends with \r (maybe the \r of \r\n)
        self.ready = memoryview(b"")
        self.eof = False
        self.refused: dict[int, tuple[str, str]] = {}  # line -> (reason, start of its text)

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        buffer = memoryview(target).cast("B")
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
            self._count_long_lone(chunk[: end if end >= 0 else len(chunk)])
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
            self._long_lone, self._long_cr = 0, False
            self._count_long_lone(data[last + 1 :])
        return head + (self._checked(complete) if complete else b"")

    def _checked(self, complete: bytes) -> bytes:
        """``complete`` (whole lines) with every line the parser cannot take emptied."""
        if len(complete) <= self.limit:
            try:
                complete.decode("utf-8")
                lone = _lone_returns(complete)
                self._uncertain |= bool(lone and self.quote and self.quote in complete)
                self.line += complete.count(b"\n") + lone
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
            lone = _lone_returns(text) - text.endswith(b"\r")
            if reason is None:
                kept.append(text)
                self._uncertain |= bool(lone and self.quote and self.quote in text)
            else:
                self._refuse(reason, text, lone)
                kept.append(b"")
            self.line += 1 + lone
        return b"\n".join(kept) + b"\n"

    def _refuse_long(self, length: int) -> None:
        lone = self._long_lone
        reason = f"line of {length} bytes, longer than the {self.limit}-byte limit"
        self._refuse(reason, self._long_start, lone)
        self.line += 1 + lone
        self.skipped = 0

    def _count_long_lone(self, part: bytes) -> None:
        """Count the lone carriage returns of the over-long line, ``part`` by ``part`` (a
        ``\r`` ending a part is lone unless the next part starts with ``\n``)."""
        if not part:
            return
        if self._long_cr and not part.startswith(b"\n"):
            self._long_lone += 1
        self._long_cr = part.endswith(b"\r")
        self._long_lone += _lone_returns(part) - self._long_cr

    def _refuse(self, reason: str, text: bytes, lone: int) -> None:
        """Record a refused line; one that holds a lone carriage return (which the parser
        reads as a line end outside quoted values) cannot be cut into the parser's lines."""
        if self._uncertain:
            raise DataError(
                f"Cannot number line {self.line} of {self.path!r} ({reason}): a carriage "
                "return alone before it may end a line or sit in a quoted value; save the "
                "file with \\n or \\r\\n line ends."
            )
        if lone:
            raise DataError(
                f"Cannot read line {self.line} of {self.path!r} ({reason}): it holds a carriage "
                "return alone, which may end a line or sit in a quoted value; save the file "
                "with \\n or \\r\\n line ends."
            )
        self.refused[self.line] = (reason, _preview(text))


def _lone_returns(data: bytes) -> int:
    """Carriage returns in ``data`` not followed by a newline (the parser's line ends too)."""
    return data.count(b"\r") - data.count(b"\r\n")


def _preview(text: bytes) -> str:
    shown = text[: 4 * REFUSED_TEXT_CHARS].decode("utf-8", "replace")
    return shown if len(shown) <= REFUSED_TEXT_CHARS else shown[:REFUSED_TEXT_CHARS] + "…"
