"""Mergeable preprocessing fitted across shards, and the feature blocks trainers read.

Every transformer has ``partial_fit(batch)``, an associative ``merge(other)``, ``finalize()``
and ``transform(batch)``; :class:`Preprocessor` combines them per column kind and fits them on
a WorkerGroup (per-shard statistics, merged on the driver). :func:`load_block` and
:func:`iter_blocks` give workers their transformed shards.

>>> from shardlearn.preprocess import Preprocessor
>>> pre = Preprocessor({"x": "numeric"}).fit({"x": [1.0, 3.0]})
>>> pre.transform({"x": [2.0, 5.0]}).ravel().tolist()
[0.0, 3.0]
"""

from __future__ import annotations

from shardlearn.preprocess.blocks import FeatureBlock, block_budget, iter_blocks, load_block
from shardlearn.preprocess.boolean import BooleanEncoder
from shardlearn.preprocess.categorical import CategoricalEncoder, HashingEncoder
from shardlearn.preprocess.datetime import DatetimeEncoder
from shardlearn.preprocess.numeric import NumericTransformer
from shardlearn.preprocess.preprocessor import KINDS, Preprocessor, read_spec
from shardlearn.preprocess.profiles import estimator_profile
from shardlearn.preprocess.sketch import QuantileSketch, rank_error
from shardlearn.preprocess.text import TextVectorizer

__all__ = [
    "KINDS",
    "BooleanEncoder",
    "CategoricalEncoder",
    "DatetimeEncoder",
    "FeatureBlock",
    "HashingEncoder",
    "NumericTransformer",
    "Preprocessor",
    "QuantileSketch",
    "TextVectorizer",
    "block_budget",
    "estimator_profile",
    "iter_blocks",
    "load_block",
    "rank_error",
    "read_spec",
]
