"""Rows without a label: ``ingest --allow-unlabeled`` keeps them in an ``unlabeled`` split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shardlearn.cli import app
from shardlearn.data import Dataset, ingest, write_dataset
from shardlearn.exceptions import DataError, SchemaError

runner = CliRunner()
STRATEGIES = ["random", "stratified", "hash:key", "range:t"]
HEADER = "id,key,t,city,label\n"


def _lines(n: int, missing_every: int = 3, start: int = 0) -> list[str]:
    """Rows whose label is missing on every ``missing_every``-th row, spelled several ways."""
    blanks = ["", "?", "NA", " "]
    lines = []
    for i in range(start, start + n):
        label = blanks[i % 4] if i % missing_every == 0 else ("yes" if i % 5 < 2 else "no")
        lines.append(f"{i},{i % 7},{i * 0.25:.2f},{'paris' if i % 2 else 'oslo'},{label}")
    return lines


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def _ids(ds: Dataset, split: str | None) -> list[int]:
    shards = ds.shards(split)
    return sorted(v for s in shards for v in s.read(["id"])["id"].to_pylist())


def _counts_add_up(ds: Dataset) -> None:
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] + m["rows_rejected"]
    assert m["rows_written"] == ds.num_rows() == ds.num_rows(None)
    labelled = sum(ds.num_rows(s) for s in ds.splits)
    assert m["rows_written"] == labelled + m["rows_unlabeled"]
    assert m["rows_unlabeled"] == ds.rows_unlabeled
    assert sum(m["class_counts"].values()) == labelled


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unlabeled_rows_get_their_own_split_and_labelled_rows_stay_put(tmp_path, strategy):
    source = _csv(tmp_path / "in.csv", _lines(300))
    options = {"partitions": 3, "strategy": strategy, "seed": 5, "max_reject_rate": 0.5}
    kept = ingest(source, "label", tmp_path / "kept", allow_unlabeled=True, **options)
    rejected = ingest(source, "label", tmp_path / "rejected", **options)

    missing = [i for i in range(300) if i % 3 == 0]
    assert _ids(kept, "unlabeled") == missing
    assert kept.rows_unlabeled == len(missing) and kept.has_unlabeled
    assert kept.splits == rejected.splits  # "unlabeled" is never one of the labelled splits
    assert _ids(kept, None) == list(range(300))  # every row in exactly one shard
    _counts_add_up(kept)
    for shard in kept.shards("unlabeled"):
        assert shard.class_counts == {}
        assert shard.read(["label"])["label"].null_count == shard.rows
    # The labelled rows land exactly where they would have without the flag.
    for split in rejected.splits:
        assert [s.sha256 for s in kept.shards(split)] == [s.sha256 for s in rejected.shards(split)]
    assert kept.manifest["class_counts"] == rejected.manifest["class_counts"]
    assert kept.classes == rejected.classes == ["no", "yes"]
    # Without the flag the same rows are rejects, with a reason, as before.
    assert rejected.manifest["rows_unlabeled"] == 0 and not rejected.has_unlabeled
    assert rejected.manifest["rows_rejected"] == len(missing)
    assert rejected.manifest["rejects"]["reasons"] == [
        {"reason": "missing label", "count": len(missing)}
    ]
    assert kept.manifest["rows_rejected"] == 0


def test_rows_without_a_label_that_are_otherwise_broken_are_still_rejected(tmp_path):
    lines = _lines(60)
    lines[3] = "3,notanint,0.75,oslo,"  # bad key and no label
    lines[9] = "9,2,2.25,oslo"  # a field short (and so no label)
    lines[12] = "12,5,x,paris,yes"  # bad float, labelled
    source = _csv(tmp_path / "in.csv", lines)
    ds = ingest(source, "label", tmp_path / "ds", partitions=2, allow_unlabeled=True,
                max_reject_rate=0.2)  # fmt: skip
    table = ds.read_rejects()
    by_line = dict(zip(table["line"].to_pylist(), table["reason"].to_pylist(), strict=True))
    assert set(by_line) == {5, 11, 14}  # physical lines: header is line 1
    assert "column 'key'" in by_line[5] and "column 't'" in by_line[14]
    assert "missing label" not in " ".join(by_line.values())
    assert 3 not in _ids(ds, None) and 9 not in _ids(ds, None) and 12 not in _ids(ds, None)
    assert _ids(ds, "unlabeled") == [i for i in range(60) if i % 3 == 0 and i not in (3, 9, 12)]
    _counts_add_up(ds)


@pytest.mark.filterwarnings("ignore:The label column 'label' has a single class")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 120),
    missing_share=st.sampled_from([0.0, 0.3, 0.9]),
    partitions=st.integers(1, 4),
    strategy=st.sampled_from(STRATEGIES),
    seed=st.integers(0, 3),
)
def test_every_row_lands_in_exactly_one_shard_and_only_unlabeled_rows_in_unlabeled(
    n, missing_share, partitions, strategy, seed
):
    import tempfile

    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.5, "a", "b").astype(object)
    hidden = rng.random(n) < missing_share
    hidden[0] = False  # at least one labelled row
    labels[hidden] = None
    table = pa.table(
        {
            "id": np.arange(n),
            "key": rng.integers(0, 5, n),
            "t": rng.normal(size=n).round(2),
            "label": pa.array(labels.tolist(), pa.string()),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"partitions": partitions, "strategy": strategy, "seed": seed,
                  "split": (0.6, 0.2, 0.2)}  # fmt: skip
        ds = write_dataset(table, f"{tmp}/ds", "label", allow_unlabeled=True, **kwargs)
        assert _ids(ds, None) == list(range(n))
        unlabeled = _ids(ds, "unlabeled") if ds.has_unlabeled else []
        assert unlabeled == np.flatnonzero(hidden).tolist()
        for split in ds.splits:
            assert ds.read(split, ["label"])["label"].null_count == 0
        assert all(s.index < partitions for s in ds.shards(None))
        assert ds.manifest["rows_unlabeled"] == int(hidden.sum())
        _counts_add_up(ds)
        if strategy.startswith("range"):
            return  # range boundaries come from every row's key, unlabeled rows' too
        # Same labelled rows without the unlabeled ones: the same labelled shards.
        alone = write_dataset(table.filter(pa.array(~hidden)), f"{tmp}/alone", "label", **kwargs)
        for split in alone.splits:
            assert [s.sha256 for s in ds.shards(split)] == [s.sha256 for s in alone.shards(split)]


def test_dataset_api_for_the_unlabeled_split(tmp_path):
    source = _csv(tmp_path / "in.csv", _lines(90))
    ds = ingest(source, "label", tmp_path / "ds", partitions=2, split=(0.8, 0.2),
                allow_unlabeled=True)  # fmt: skip
    assert ds.splits == ["train", "valid"]
    assert ds.num_rows("unlabeled") == 30 == ds.read("unlabeled").num_rows
    assert ds.read("unlabeled")["label"].null_count == 30
    assert ds.class_counts("unlabeled") == {"no": 0, "yes": 0}
    assert ds.num_rows() == 90 and ds.num_rows("train") + ds.num_rows("valid") == 60
    assert Dataset.open(tmp_path / "ds").rows_unlabeled == 30
    labelled_only = ingest(_csv(tmp_path / "clean.csv", _lines(30, missing_every=10**9)),
                           "label", tmp_path / "clean", partitions=2)  # fmt: skip
    with pytest.raises(DataError, match="no 'unlabeled' split.*--allow-unlabeled"):
        labelled_only.shards("unlabeled")
    with pytest.raises(DataError, match="unlabeled"):
        ds.shards("unlabelled")  # a typo names the splits there are


def test_clear_errors_for_unusable_unlabeled_input(tmp_path):
    every = _csv(tmp_path / "none.csv", _lines(30, missing_every=1))
    with pytest.raises(DataError, match="No labelled rows: all 30 rows"):
        ingest(every, "label", tmp_path / "ds", allow_unlabeled=True)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    with pytest.raises(SchemaError, match="needs a label column"):
        ingest(_csv(tmp_path / "in.csv", _lines(30)), None, tmp_path / "x", allow_unlabeled=True)
    table = pa.table({"x": [1.0, 2.0, 3.0], "y": pa.array(["a", None, "b"])})
    with pytest.raises(DataError, match="1 missing values.*allow_unlabeled=True"):
        write_dataset(table, tmp_path / "w", "y")
    ds = write_dataset(table, tmp_path / "w", "y", partitions=1, allow_unlabeled=True)
    assert ds.rows_unlabeled == 1 and ds.num_rows("train") == 2


def test_cli_ingest_allow_unlabeled_and_describe(tmp_path):
    source = _csv(tmp_path / "in.csv", _lines(120))
    out = tmp_path / "ds"
    args = ["ingest", str(source), "--label", "label", "--out", str(out), "--partitions", "2",
            "--split", "0.75,0.25", "--strategy", "stratified"]  # fmt: skip
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "top reasons: missing label (40)" in str(refused.exception)
    result = runner.invoke(app, [*args, "--allow-unlabeled"])
    assert result.exit_code == 0, result.output
    assert "rows_read=120 = rows_written=120 (of which unlabeled 40) + rows_rejected=0" in (
        result.output
    )
    assert "unlabeled  2" in result.output  # the split table's unlabeled row: 2 shards
    described = runner.invoke(app, ["describe", str(out), "--json", "--verify"])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["rows_unlabeled"] == 40 and info["verify"]["ok"]
    assert info["splits"]["unlabeled"] == {
        "rows": 40,
        "shards": 2,
        "class_counts": {"no": 0, "yes": 0},
    }
    assert sum(v["rows"] for v in info["splits"].values()) == info["rows_written"] == 120
    text = runner.invoke(app, ["describe", str(out)])
    assert text.exit_code == 0 and "(of which unlabeled 40)" in text.output
    assert "unlabeled  0" in text.output and "unlabeled  1" in text.output  # its shards


def test_feature_blocks_of_the_unlabeled_split_have_no_labels(tmp_path):
    from types import SimpleNamespace

    from shardlearn.preprocess import Preprocessor, load_block

    source = _csv(tmp_path / "in.csv", _lines(90))
    ds = ingest(source, "label", tmp_path / "ds", partitions=2, split=(0.8, 0.2),
                allow_unlabeled=True)  # fmt: skip
    pre = Preprocessor.auto(ds.schema).fit(ds)
    state = SimpleNamespace(
        shards=ds.shards(None), cache={}, size=1, rank=0,
        context={"preprocessor": pre, "classes": ds.classes, "label": "label"},
    )  # fmt: skip
    unlabeled = load_block(state, "unlabeled")
    assert unlabeled.y is None and unlabeled.n_rows == 30
    rows = ds.read("unlabeled")
    np.testing.assert_allclose(unlabeled.X, pre.transform(rows.drop_columns(["label"])))
    train = load_block(state, "train")
    assert train.n_rows == ds.num_rows("train") and train.y is not None
    expected = [ds.classes.index(v) for v in ds.read("train")["label"].to_pylist()]
    assert sorted(train.y.tolist()) == sorted(expected)
