"""Sharded datasets: schema, partitioners, ingest and the :class:`Dataset` reader.

>>> import pyarrow as pa
>>> from shardlearn.data import Dataset, write_dataset
>>> t = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": ["a", "b", "a", "b"]})
>>> _ = write_dataset(t, "data/tiny", label="y", partitions=2)
>>> ds = Dataset.open("data/tiny")
>>> ds.shards("train")[0].read().num_rows
2
"""

from __future__ import annotations

from shardlearn.data.dataset import Dataset, Shard
from shardlearn.data.ingest import ingest, write_dataset
from shardlearn.data.partition import SPLITS
from shardlearn.data.schema import KINDS, Column, Schema

__all__ = ["KINDS", "SPLITS", "Column", "Dataset", "Schema", "Shard", "ingest", "write_dataset"]
