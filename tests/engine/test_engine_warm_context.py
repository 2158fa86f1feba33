"""A ``with engine(...)`` block is a warm scope (:mod:`shardlearn._warm`): consecutive fits in
it reuse the shard tables, feature blocks and fitted preprocessor of the first, on the driver
and on the worker processes, and ending the block drops them everywhere."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from shardlearn import _warm
from shardlearn.data import write_dataset
from shardlearn.engine import create_engine, engine
from shardlearn.models import LogisticRegression, Pipeline
from shardlearn.preprocess import Preprocessor

WORKERS = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 3))
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = (X[:, 0] + (colour == "red") + 0.5 * rng.normal(size=n) > 0.3).astype(np.int64)
    table = pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "colour": colour, "y": y})
    out = tmp_path_factory.mktemp("engine-warm") / "ds"
    return write_dataset(table, out, label="y", partitions=4, strategy="stratified")


def _fit(dataset, C: float) -> Pipeline:
    return Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(C=C)).fit(dataset)


def _kept(state) -> tuple[str, int] | None:
    """The warm scope this worker process keeps values of, and how many (None: none)."""
    store = _warm._STORE
    return None if store is None else (store.name, len(store.values))


def test_fits_in_one_engine_block_reuse_and_the_block_end_releases(dataset) -> None:
    with engine("local", workers=WORKERS):
        name = _warm.current().name
        with _warm.scope(name) as first:
            _fit(dataset, C=1.0)
        with _warm.scope(name) as second:
            model = _fit(dataset, C=0.1)
        with engine("local", workers=WORKERS) as inner:  # a nested block: the same scope
            assert _warm.current().name == name
            with inner.workers(WORKERS) as group:
                pids = group.pids
                kept = group.run(_kept)
    assert _warm.current() is None and _warm._STORE is None  # the driver dropped them
    assert first.builds["preprocessor_builds"] == 1 and first.builds["shard_reads"] > 0
    assert second.hits["preprocessor_builds"] == 1 and second.builds["preprocessor_builds"] == 0
    assert second.builds["shard_reads"] == second.builds["block_builds"] == 0
    assert second.hits["block_builds"] > 0
    assert all(entry is not None and entry[0] == name and entry[1] > 0 for entry in kept)
    # The reused preprocessor is the one a fit outside any scope gives.
    plain = create_engine("local", workers=WORKERS)
    try:
        fresh = _fit_outside(dataset, plain)
        with plain.workers(WORKERS) as group:
            after = dict(zip(group.pids, group.run(_kept), strict=True))
    finally:
        plain.close()
    assert model.preprocessor.fingerprint == fresh.preprocessor.fingerprint
    rows = dataset.read("train")
    np.testing.assert_array_equal(
        model.preprocessor.transform(rows), fresh.preprocessor.transform(rows)
    )
    np.testing.assert_allclose(model.predict_proba(rows), fresh.predict_proba(rows))
    # The block's worker processes, idle again, dropped its values when it ended.
    assert set(pids) & set(after)
    assert all(after[pid] is None or after[pid][1] == 0 for pid in pids if pid in after)


def _fit_outside(dataset, eng) -> Pipeline:
    assert _warm.current() is None
    return Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(C=0.1)).fit(
        dataset, engine=eng
    )


def test_sessions_nest_and_only_the_outer_one_releases() -> None:
    with _warm.session("outer-session", budget=10**6) as outer:
        _warm.fetch("shard_reads", "a", lambda: "A", len)
        with _warm.session("inner-session") as inner:
            assert _warm.current().name == "outer-session"
            assert _warm.fetch("shard_reads", "a", lambda: "rebuilt", len) == "A"
        assert _warm._STORE is not None and _warm._STORE.name == "outer-session"
    assert _warm._STORE is None
    assert inner.hits["shard_reads"] == 1
    assert outer.builds["shard_reads"] == 1 and outer.hits["shard_reads"] == 1  # inner's too


def test_data_rewritten_in_place_within_a_block_is_read_afresh(dataset, tmp_path) -> None:
    """Keys hold the shard files' digests: a dataset written again at the same path with other
    rows, and opened again, gets its own preprocessor and shard tables, as a fresh fit would."""
    original = dataset.read("train")
    out = tmp_path / "ds"
    with engine("local", workers=1):
        name = _warm.current().name
        first = write_dataset(original, out, label="y", partitions=4)
        with _warm.scope(name):
            _fit(first, C=1.0)
        flipped = original.set_column(
            original.schema.get_field_index("x0"), "x0", pa.compute.negate(original["x0"])
        )
        second = write_dataset(flipped, out, label="y", partitions=4, overwrite=True)
        with _warm.scope(name) as counters:
            model = _fit(second, C=1.0)
    # Every shard of the new files read (then reused within this fit), the preprocessor refitted.
    assert counters.builds["preprocessor_builds"] == 1 and counters.builds["shard_reads"] == 4
    plain = create_engine("local", workers=1)
    try:
        fresh = Pipeline(Preprocessor.auto(second.schema), LogisticRegression(C=1.0)).fit(
            second, engine=plain
        )
    finally:
        plain.close()
    assert model.preprocessor.fingerprint == fresh.preprocessor.fingerprint
    np.testing.assert_allclose(model.predict_proba(flipped), fresh.predict_proba(flipped))


def test_a_preprocessor_whose_parameters_are_not_plain_json_is_fitted_afresh(dataset):
    """A parameter only ``repr`` could describe (an object) gives no reuse key: two such
    preprocessors could print alike and differ, so each Pipeline fit fits its own."""
    from shardlearn.models.pipeline import _preprocessor_key

    plain = Preprocessor.auto(dataset.schema)
    assert _preprocessor_key(plain, dataset) is not None
    odd = Preprocessor({**plain.columns, "x0": {"kind": "numeric", "note": object()}})
    assert _preprocessor_key(odd, dataset) is None


def test_fits_on_other_threads_of_an_engine_block_work_in_its_scope(dataset) -> None:
    """A thread pool's fits inside the block (threads with no scope of their own) reuse the
    block's shard tables and fitted preprocessor, give the models of fits without a scope, and
    keep nothing after the block."""
    strengths = [1.0, 0.5, 0.1, 0.05]
    with engine("local", workers=1):
        counters = _warm.current().counters
        with ThreadPoolExecutor(2) as pool:
            models = list(pool.map(lambda C: _fit(dataset, C), strengths))
        assert _warm._STORE is not None and _warm._STORE.values
    assert counters.builds["preprocessor_builds"] == 1
    assert counters.hits["preprocessor_builds"] == len(strengths) - 1
    assert counters.builds["shard_reads"] == len(set(counters.shards)) > 0  # each read once
    assert counters.hits["shard_reads"] + counters.hits["block_builds"] > 0
    # After the block nothing is kept and a thread's fit has no scope.
    assert _warm._STORE is None and _warm._PROCESS_WIDE == ()
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(_warm.current).result() is None
    plain = create_engine("local", workers=1)
    try:
        rows = dataset.read("train")
        for C, model in zip(strengths, models, strict=True):
            fresh = _fit_outside_with(dataset, plain, C)
            assert model.preprocessor.fingerprint == fresh.preprocessor.fingerprint
            np.testing.assert_array_equal(model.predict_proba(rows), fresh.predict_proba(rows))
    finally:
        plain.close()


def _fit_outside_with(dataset, eng, C: float) -> Pipeline:
    assert _warm.current() is None
    return Pipeline(Preprocessor.auto(dataset.schema), LogisticRegression(C=C)).fit(
        dataset, engine=eng
    )


def _scope_name() -> str | None:
    handle = _warm.current()
    return None if handle is None else handle.name


def _block_on_a_thread() -> tuple[str, str | None, str | None]:
    """A block opened on a thread while another thread's block is open: its own scope, the
    scope of threads without one while it is open."""
    with engine("local", workers=1):
        own = _scope_name()
        with ThreadPoolExecutor(1) as pool:
            seen = pool.submit(_scope_name).result()
            with _warm.scope("a-search-trial"):  # a thread's own scope comes first
                inner = _scope_name()
            _warm.release("a-search-trial")  # as the search does at its end
    return own, seen, inner


def test_engine_blocks_on_two_threads_are_scopes_of_their_own() -> None:
    with engine("local", workers=1):
        outer, store = _scope_name(), _warm._STORE
        with ThreadPoolExecutor(1) as pool:
            own, seen, inner = pool.submit(_block_on_a_thread).result()
            after = pool.submit(_scope_name).result()  # the inner block ended: the outer one
        with _warm.session("a-pipeline-run") as run:  # nests: the block's scope, kept after
            assert _scope_name() == outer
            _warm.fetch("shard_reads", "k", lambda: "v", len)
        assert _warm.fetch("shard_reads", "k", lambda: "rebuilt", len) == "v"
    assert own not in (None, outer) and seen == own and after == outer
    assert inner == "a-search-trial" and run.builds["shard_reads"] == 1
    assert _warm._PROCESS_WIDE == () and _warm._STORE is None and not store.values
