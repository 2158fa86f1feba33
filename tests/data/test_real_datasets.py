"""Real files from ../shared/datasets: counts must match the figures in its README.

Adult: fields are separated by ", " (values are trimmed), a missing value is written "?" (one
of ingest's default missing-value markers), and adult.test writes its labels with a trailing
dot (">50K."). Ingest keeps labels verbatim, so adult.test alone has the classes "<=50K." and
">50K."; ``label_strip="."`` (``--label-strip .``) maps both files onto the same two classes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from shardlearn.data import Dataset, ingest


def _column_counts(ds: Dataset, column: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for split in ds.splits:
        for item in pc.value_counts(ds.read(split, [column])[column]).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return counts


def _null_count(ds: Dataset, column: str) -> int:
    return sum(ds.read(s, [column])[column].null_count for s in ds.splits)


def test_adult_train_counts_and_missing_values(shared_datasets: Path, tmp_path: Path) -> None:
    ds = ingest(
        shared_datasets / "adult" / "adult.data", "Y", tmp_path / "adult", strategy="stratified"
    )
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] == 32_561 and m["rows_rejected"] == 0
    assert ds.classes == ["<=50K", ">50K"]
    assert m["class_counts"] == {"<=50K": 24_720, ">50K": 7_841}
    assert _null_count(ds, "workclass") == 1_836
    assert _null_count(ds, "occupation") == 1_843
    assert _null_count(ds, "native-country") == 583
    kinds = {c.name: (c.kind, c.dtype) for c in ds.schema}
    assert kinds["age"] == ("numeric", "int64")
    assert kinds["education"] == ("categorical", "string")
    assert ds.schema.names[0] == "age" and "workclass" in ds.schema.names  # header trimmed
    # Stratified: every split keeps the 24,720 : 7,841 proportion within one row.
    for split, fraction in zip(("train", "valid", "test"), (0.8, 0.1, 0.1), strict=True):
        counts = ds.class_counts(split)
        assert abs(counts["<=50K"] - 24_720 * fraction) <= 1
        assert abs(counts[">50K"] - 7_841 * fraction) <= 1


def test_adult_test_keeps_dotted_labels_unless_stripped(
    shared_datasets: Path, tmp_path: Path
) -> None:
    test_file = shared_datasets / "adult" / "adult.test"
    ds = ingest(test_file, "Y", tmp_path / "test", partitions=2)
    assert ds.manifest["rows_read"] == 16_281 and ds.manifest["rows_rejected"] == 0
    assert ds.manifest["class_counts"] == {"<=50K.": 12_435, ">50K.": 3_846}
    assert _null_count(ds, "workclass") == 963
    both = ingest(
        [shared_datasets / "adult" / "adult.data", test_file],
        "Y",
        tmp_path / "both",
        partitions=4,
        label_strip=".",
    )
    assert both.classes == ["<=50K", ">50K"]
    assert both.manifest["class_counts"] == {"<=50K": 24_720 + 12_435, ">50K": 7_841 + 3_846}


@pytest.mark.slow
def test_kddcup99_ten_percent_counts(shared_datasets: Path, tmp_path: Path) -> None:
    folder = shared_datasets / "kddcup99"
    columns = (folder / "columns.txt").read_text().split()
    assert len(columns) == 42 and columns[-1] == "label"
    ds = ingest(
        folder / "kddcup.data_10_percent.gz",
        "label",
        tmp_path / "kdd",
        partitions=4,
        strategy="stratified",
        format="csv",  # "kddcup.data_10_percent.gz": no extension to infer it from
        header=False,
        columns=columns,
    )
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] == 494_021 and m["rows_rejected"] == 0
    assert len(ds.classes) == 23
    counts = m["class_counts"]
    assert counts["smurf."] == 280_790 and counts["neptune."] == 107_201
    assert counts["normal."] == 97_278 and counts["spy."] == 2 and counts["perl."] == 3
    assert sum(counts.values()) - counts["normal."] == 396_743
    assert _column_counts(ds, "protocol_type") == {"icmp": 283_602, "tcp": 190_065, "udp": 20_354}
    assert ds.schema["num_outbound_cmds"].kind == "numeric"
    assert ds.schema["service"].kind == "categorical"
    for split in ds.splits:  # stratified: even rare classes are spread within ±1 per shard
        in_split = ds.class_counts(split)
        for shard in ds.shards(split):
            for label, total in in_split.items():
                assert abs(shard.class_counts.get(label, 0) - total / 4) <= 1


def test_sms_spam_tsv_keeps_every_line_even_with_quotes_in_messages(
    shared_datasets: Path, tmp_path: Path
) -> None:
    """A '"' inside a TSV message is text; reading it as a quote would join lines."""
    source = shared_datasets / "sms_spam" / "SMSSpamCollection"
    ds = ingest(
        source, "label", tmp_path / "sms", partitions=2, strategy="stratified", format="tsv",
        header=False, columns=["label", "text"], kinds={"text": "text"},
    )  # fmt: skip
    m = ds.manifest
    assert m["rows_read"] == m["rows_written"] == 5_574 and m["rows_rejected"] == 0
    assert m["class_counts"] == {"ham": 4_827, "spam": 747}
    texts = [t for split in ds.splits for t in ds.read(split).column("text").to_pylist()]
    assert not any("\n" in t for t in texts if t)
