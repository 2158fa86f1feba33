"""JSON Lines through pyarrow's JSON reader give exactly what the per-line reference gives: the
same columns, rows, text values, line numbers and rejects (reasons included), and an ingest of
the same file writes the same dataset byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import shardlearn as sl
from shardlearn.data import _jsonl
from shardlearn.data.readers import SourceReader

KEYS = ["a", "b", "label", "é k"]
NUMBER = st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,18})?([eE][+-]?[0-9]{1,3})?\Z")
SCALAR = st.one_of(
    NUMBER,
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(json.dumps),
    st.sampled_from(["true", "false", "null", "-0", "10.0", "1E5", '"2020-01-01"', '""']),
    st.text(max_size=8).map(json.dumps),
    st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False)),  # raw UTF-8
    st.sampled_from(["-NaN", "Inf", "-Inf", "[1, 2]", '{"x": 1}', "[]", '"\\u00e9\\ud83d\\ude00"']),
)
RECORD = st.dictionaries(st.sampled_from([*KEYS, "extra"]), SCALAR, max_size=5).map(
    lambda d: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in d.items()) + "}"
)
ODD = st.sampled_from(
    [
        "", "   ", "\t\r", "\x0c", "{not json", "[1,2]", "5", '"s"', "{}",
        '{"a": 1} {"a": 2}', '{"a": 1}\r{"a": 2}', '{"a": 1, "a": 2}', '{"a": 1,}',
        '\ufeff{"a": 1}', '{"a": ' + "[" * 300 + "]" * 300 + "}",
        '{"extra": ' + "[" * 1200 + "]" * 1200 + "}", '{"a": "x' + "y" * 300 + '"}',
        '{"a": 1}\x00', '{"a": "x\x00y"}', "\x85", "\u3000", '{"a": "\u2028"}', '{"a": 1}  \t',
    ]
)  # fmt: skip
GARBAGE = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b""))
LINE = (
    st.one_of(RECORD, RECORD, RECORD, ODD).map(str.encode)
    | st.sampled_from([b'{"a": "\xff"}', b"\xef\xbb\xbf{}"])
    | GARBAGE
)
FILE = st.tuples(
    st.lists(LINE, min_size=1, max_size=60),
    st.booleans(),  # a newline after the last line
    st.sampled_from([b"\n", b"\r\n"]),
)


def _data(lines: list[bytes], final: bool, newline: bytes) -> bytes:
    return newline.join(lines) + (newline if final else b"")


def _reference(data: bytes, limit: int, columns: list[str] | None) -> tuple[list[str], tuple]:
    stream = io.BufferedReader(io.BytesIO(data))
    chunks = list(_jsonl.read_by_line(stream, "f", limit, columns))
    return chunks[-1][0] if chunks else list(columns or []), _flatten([r for _, r in chunks])


def _arrow(
    data: bytes, limit: int, columns: list[str] | None, threads: int = 1
) -> tuple[list[str], tuple]:
    reader = _jsonl.JsonLinesReader("f", limit, columns, {}, (), threads)
    parts = list(reader.batches(pa.BufferReader(data)))
    return reader.names or [], _flatten(parts)


def _flatten(parts: list) -> tuple:
    rows = [r for p in parts for r in zip(*[c.to_pylist() for c in p.batch.columns], strict=True)]
    lines = [int(n) for p in parts for n in p.lines]
    rejects = sorted(r for p in parts for r in p.invalid)
    return rows, lines, rejects


DEEP = b'{"extra": ' + b"[" * 1200 + b"]" * 1200 + b"}"  # too deep for Python's json


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    file=FILE,
    read_bytes=st.sampled_from([64, 200, 1 << 20]),
    chunk_lines=st.sampled_from([3, 20000]),
    columns=st.sampled_from([None, ["a", "label"]]),
    limit=st.sampled_from([250, 1 << 16]),  # 250: some lines are longer (rejects)
    threads=st.sampled_from([1, 3]),  # the first chunk's blocks parsed at once
)
def test_arrow_path_equals_the_per_line_reference(
    file: tuple,
    read_bytes: int,
    chunk_lines: int,
    columns: list[str] | None,
    limit: int,
    threads: int,
) -> None:
    data = _data(*file)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_jsonl, "READ_BYTES", read_bytes)
        patch.setattr(_jsonl, "CHUNK_LINES", chunk_lines)
        patch.setattr(_jsonl, "NAME_RECORDS", min(chunk_lines, 1000))
        assert _arrow(data, limit, columns, threads) == _reference(data, limit, columns)


def test_a_line_too_deep_for_python_is_a_reject_in_an_extra_column_too() -> None:
    """Arrow reads any depth; Python's json stops at its recursion limit (outside hypothesis,
    which raises the limit)."""
    data = _data([b'{"a": 1}', DEEP, b'{"a": 2}'], True, b"\n")
    names, (rows, lines, rejects) = _arrow(data, 1 << 16, None)
    assert (names, rows, lines) == (["a"], [("1",), ("2",)], [1, 3])
    assert [(line, reason) for line, reason, _ in rejects] == [
        (2, "invalid JSON: nested too deeply")
    ]
    assert _arrow(data, 1 << 16, None) == _reference(data, 1 << 16, None)


def _reference_jsonl(self: SourceReader):  # the reader ingest used before, for comparison
    stream = io.BufferedReader(io.BytesIO(self._open_stream().read()))
    for names, rows in _jsonl.read_by_line(stream, self.path, self.options.block_size, None):
        self.column_names = names
        yield sl.data.readers.RawBatch(self.path, rows.batch, rows.lines, rows.invalid)


def _files(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                manifest = json.loads(data)
                manifest.pop("created_at", None)
                data = json.dumps(manifest, sort_keys=True).encode()
            files[str(path.relative_to(root))] = data
    return files


NUMERIC_RECORD = st.fixed_dictionaries(
    {
        "a": st.one_of(NUMBER, st.sampled_from(["-0", "10.0", "3", "null", '"4.50"'])),
        "b": st.one_of(NUMBER, st.integers(-5, 5).map(str)),
        "label": st.sampled_from(['"x"', '"y"', "1", "true"]),
    }  # fmt: skip
).map(lambda d: "{" + ", ".join(f'"{k}": {v}' for k, v in d.items()) + "}")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.one_of(NUMERIC_RECORD.map(str.encode), LINE), min_size=30, max_size=80),
    seed=st.integers(0, 3),
)
@example([b'{"a": -0, "b": 1, "label": "x"}', b'{"a": 2.5, "b": 1, "label": "y"}'] * 20, 0)
def test_ingest_writes_the_reference_dataset_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], seed: int
) -> None:
    folder = tmp_path_factory.mktemp("jsonl")
    # Typed numeric columns: the first lines make 'a' and 'b' numbers, 'label' text.
    head = [json.dumps({"a": i + 0.5, "b": i, "label": "xy"[i % 2]}).encode() for i in range(20)]
    (folder / "in.jsonl").write_bytes(b"\n".join(head + lines) + b"\n")
    outcomes = []
    for name, patched in (("arrow", None), ("reference", _reference_jsonl)):
        with pytest.MonkeyPatch.context() as patch:
            if patched is not None:
                patch.setattr(SourceReader, "_jsonl", patched)
            try:
                sl.ingest(
                    folder / "in.jsonl", "label", folder / name, partitions=2, seed=seed,
                    max_reject_rate=1.0,
                )  # fmt: skip
                outcomes.append(_files(folder / name))
            except sl.exceptions.ShardlearnError as error:
                outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


def _counting(patch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Record the lines the reference reads and count Arrow's parses."""
    referred: list[int] = []
    parses: list[int] = []
    reference, read_json = _jsonl.reference_rows, _jsonl.pajson.read_json
    patch.setattr(
        _jsonl,
        "reference_rows",
        lambda items, names: referred.extend(n for n, _ in items) or reference(items, names),
    )
    patch.setattr(
        _jsonl.pajson, "read_json", lambda *a, **k: parses.append(1) or read_json(*a, **k)
    )
    return referred, parses


def test_benchmark_like_file_is_parsed_by_arrow_not_line_by_line(tmp_path: Path) -> None:
    """Clean numeric records never reach the per-line reference."""
    rng = np.random.default_rng(0)
    records = [
        {"x": float(v), "n": int(k), "c": "abc"[int(k) % 3]}
        for v, k in zip(
            np.round(rng.normal(size=2000) * 100, 3), rng.integers(0, 9, 2000), strict=True
        )
    ]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    with pytest.MonkeyPatch.context() as patch:
        referred, _ = _counting(patch)
        reader = _jsonl.JsonLinesReader("f", 1 << 20, None, {}, ())
        parts = list(reader.batches(pa.BufferReader(data)))
    assert sum(len(p.lines) for p in parts) == 2000
    assert len(referred) < 40  # integral floats (x.0) are the only lines the reference reads
    assert _flatten(parts) == _reference(data, 1 << 20, None)[1]


def test_zstd_frames_keep_line_numbers(tmp_path: Path) -> None:
    """A .jsonl.zst of several zstd frames (as pzstd writes them), one line cut across two
    frames: rows and rejects carry the lines of the decompressed text."""
    lines = [json.dumps({"x": i * 0.5, "y": "ab"[i % 2]}) for i in range(300)]
    lines[7], lines[250] = "{bad", '{"x": [1], "y": "a"}'
    text = ("\n".join(lines) + "\n").encode()
    cut = text.index(b"\n", 5000) - 5  # inside a line

    def frame(data: bytes) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as stream:
            stream.write(data)
        return sink.getvalue().to_pybytes()

    (tmp_path / "in.jsonl.zst").write_bytes(frame(text[:cut]) + frame(text[cut:]))
    ds = sl.ingest(tmp_path / "in.jsonl.zst", "y", tmp_path / "ds", partitions=1)
    rejects = [(r["line"], r["reason"][:12]) for r in ds.read_rejects().to_pylist()]
    assert rejects == [(8, "invalid JSON"), (251, "column 'x': ")]
    assert ds.manifest["rows_read"] == 300 and ds.num_rows() == 298


def test_negative_zero_floats_stay_on_the_arrow_path() -> None:
    """A typed float column's -0.0 is Arrow's value (the reference's text "-0.0" casts to it):
    only a line holding the integer -0 (0 for Python, -0.0 for Arrow) is read by the reference,
    and the block's other rows stay typed."""
    tokens = ["1.5", "-0.0", "2.25", "-0.000", "-0e0", "3.5", "-0.5"] * 40
    integer_zero = [3, 100, 250]  # lines holding the integer -0
    for line in integer_zero:
        tokens[line - 1] = "-0"
    data = "".join(f'{{"x": {t}, "c": "a"}}\n' for t in tokens).encode()
    with pytest.MonkeyPatch.context() as patch:
        referred, _ = _counting(patch)
        reader = _jsonl.JsonLinesReader("f", 1 << 20, None, {"x": pa.float64()}, ())
        parts = list(reader.batches(pa.BufferReader(data)))
    assert sorted(referred) == integer_zero
    lines = [int(n) for p in parts for n in p.lines]
    values = [v for p in parts for v in p.batch.column("x").to_pylist()]
    assert lines == list(range(1, len(tokens) + 1))
    # Typed -0.0 where the token is a float; the integer -0 as the reference's text "0".
    got = [v if n in integer_zero else repr(v) for n, v in zip(lines, values, strict=True)]
    want = ["0" if n in integer_zero else repr(float(t)) for n, t in enumerate(tokens, 1)]
    assert got == want


@pytest.mark.parametrize("bad_lines", [[5900], [100, 4000, 5950], list(range(30, 6000, 50))])
def test_bad_lines_in_a_block_are_found_exactly_by_one_arrow_block(bad_lines: list[int]) -> None:
    """A block is parsed as one Arrow block (no threads inside Arrow, which count a refused row
    from the start of their own block): the row Arrow names is exact on the first parse, so
    each bad line costs two parses (the refused one and the lines before it again), only the
    bad lines reach the reference, and the block's rows come back as one batch."""
    lines = [json.dumps({"x": i * 0.25, "n": i, "c": "abc"[i % 3]}) for i in range(6000)]
    for line in bad_lines:
        lines[line - 1] = '{"x": 1.5, "n": 2, "c": oops}' if line % 2 else "{not json"
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) > 2 * (1 << 16)  # more than one Arrow block of the default size
    with pytest.MonkeyPatch.context() as patch:
        referred, parses = _counting(patch)
        reader = _jsonl.JsonLinesReader("f", 1 << 20, None, {"x": pa.float64()}, ())
        parts = list(reader.batches(pa.BufferReader(data)))
    assert sorted(referred) == bad_lines
    assert len(parses) == 1 + 2 * len(bad_lines)
    assert len(parts) == 1 and sorted(n for n, _, _ in parts[0].invalid) == bad_lines
    rows, got_lines, rejects = _flatten(parts)
    assert got_lines == [n for n in range(1, 6001) if n not in bad_lines]
    assert rows == [
        (float(json.loads(lines[n - 1])["x"]), str(n - 1), "abc"[(n - 1) % 3]) for n in got_lines
    ]
    reference = _reference(data, 1 << 20, None)[1]
    assert [r[:2] for r in rejects] == [r[:2] for r in reference[2]]


def test_brackets_inside_strings_of_a_flat_block_stay_on_the_arrow_path() -> None:
    """Python's recursion limit is why a line of many brackets goes to the reference; Arrow
    found no list or object in a flat block, so its brackets (in strings) are never counted
    and its lines stay on Arrow. A nested line of as many brackets still goes there (with the
    lines whose strings hold as many: a nested block's brackets are counted as bytes)."""
    braces = "{[" * 150
    lines = [json.dumps({"x": i + 0.5, "c": braces if i % 7 == 0 else "a"}) for i in range(300)]
    data = ("\n".join(lines) + "\n").encode()
    nested = data + (json.dumps({"x": 1.5, "c": "a", "extra": [[[[[]]]]] * 60}) + "\n").encode()
    for text, want in ((data, []), (nested, [*range(1, 301, 7), 301])):
        with pytest.MonkeyPatch.context() as patch:
            referred, _ = _counting(patch)
            arrow = _arrow(text, 1 << 20, None)
        assert sorted(referred) == want
        assert arrow == _reference(text, 1 << 20, None)


def test_the_head_that_names_the_columns_ends_a_block() -> None:
    """Ingest's schema sample takes the first 20000 rows of a stream (the reference's first
    chunk, whose records name the columns): the block holding the chunk's last line ends there,
    so Arrow parses nothing the sample does not take, and the rows are still the reference's."""
    records = [{"x": i + 0.5, "c": "ab"[i % 2]} for i in range(400)]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_jsonl, "READ_BYTES", 4096)  # about 140 lines a block
        patch.setattr(_jsonl, "CHUNK_LINES", 250)
        reader = _jsonl.JsonLinesReader("f", 1 << 20, None, {}, ())
        last = [int(part.lines[-1]) for part in reader.batches(pa.BufferReader(data))]
        assert 250 in last and last[-1] == 400
        assert _arrow(data, 1 << 20, None) == _reference(data, 1 << 20, None)


def test_a_line_between_two_over_long_lines_is_its_own_row() -> None:
    """What follows a skipped over-long line may hold whole lines before the next long one: a
    short record there is a row with its own line number, not glued to the next long line
    as one reject (found by the Hypothesis test above with 64-byte reads)."""
    long_line = b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}"
    data = b"\n".join([long_line, b'{"a": 1}', long_line, b'{"a": 2}'])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_jsonl, "READ_BYTES", 64)
        arrow = _arrow(data, 250, None)
    assert arrow == _reference(data, 250, None)
    _, (rows, lines, rejects) = arrow
    assert rows == [("1",), ("2",)] and lines == [2, 4]
    assert [line for line, _, _ in rejects] == [1, 3]
