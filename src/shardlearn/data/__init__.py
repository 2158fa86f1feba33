"""Sharded datasets: schema, partitioners, ingest and the :class:`Dataset` reader.

>>> from shardlearn.data import Dataset, write_dataset          # doctest: +SKIP
>>> ds = Dataset.open("data/loans")                             # doctest: +SKIP
>>> table = ds.shards("train")[0].read()                        # doctest: +SKIP
"""

from __future__ import annotations

from shardlearn.data.dataset import Dataset, Shard
from shardlearn.data.ingest import ingest, write_dataset
from shardlearn.data.partition import SPLITS
from shardlearn.data.schema import KINDS, Column, Schema

__all__ = ["KINDS", "SPLITS", "Column", "Dataset", "Schema", "Shard", "ingest", "write_dataset"]
