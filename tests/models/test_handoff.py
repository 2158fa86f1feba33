"""Array hand-off: views shared with in-process workers, or parts written for worker processes
(to the temp dir, or shared memory when asked for); checked finite, always released."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid

import numpy as np
import pytest
import scipy.sparse as sp

from shardlearn.engine import engine
from shardlearn.exceptions import DataError, TaskFailed
from shardlearn.models import GaussianNB, LogisticRegression
from shardlearn.models._training import handoff as _handoff
from shardlearn.models._training.fitting import prepare_training, training_block
from shardlearn.models._training.handoff import check_finite, load_array_part
from shardlearn.models._training.labels import encode_labels

# Estimators whose array input reaches local workers each way: LogisticRegression asks for
# threads (its parts are views of the caller's arrays), GaussianNB runs on worker processes
# (its parts are written to files).
SHARED, WRITTEN = LogisticRegression, GaussianNB


@pytest.fixture
def own_prefix(monkeypatch):
    """A ``shardlearn-fit-*`` prefix of this test's own: fits running elsewhere on the machine
    do not show up in its listings."""
    prefix = f"{_handoff.PART_DIR_PREFIX}test-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
    monkeypatch.setattr(_handoff, "PART_DIR_PREFIX", prefix)
    return prefix


@pytest.fixture(params=["temp", "shared"])
def parts_root(request, monkeypatch):
    """Where the parts must go: the temp dir by default, /dev/shm when asked for (and there)."""
    if request.param == "temp":
        monkeypatch.delenv(_handoff.SHARED_MEMORY_ENV, raising=False)
        return tempfile.gettempdir()
    monkeypatch.setenv(_handoff.SHARED_MEMORY_ENV, "1")
    return str(_handoff.SHARED_MEMORY) if _handoff._shared_memory_fits(0) else tempfile.gettempdir()


def _part_dirs(prefix: str) -> set[str]:
    roots = ["/dev/shm", tempfile.gettempdir()]
    return {path for root in roots for path in glob.glob(os.path.join(root, prefix + "*"))}


def _block(state):
    block = training_block(state, "train")
    X = block.X.toarray() if sp.issparse(block.X) else np.asarray(block.X)
    return [s.index for s in state.shards], X, block.y, block.sample_weight


def _part_paths(state):
    return [s.uri for s in state.shards]


def _data(n=203, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def _gathered(blocks):
    """All rows in part order (the parts are contiguous row ranges, one per worker here)."""
    blocks = sorted(blocks, key=lambda block: block[0])
    assert [block[0] for block in blocks] == [[0], [1]]
    return tuple(
        None if blocks[0][k] is None else np.concatenate([block[k] for block in blocks])
        for k in (1, 2, 3)
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_parts_written_in_chunks_reach_the_workers_unchanged(sparse, monkeypatch, parts_root):
    monkeypatch.setattr(_handoff, "CHUNK_BYTES", 64)  # many chunks per part
    X, y = _data()
    X[X < 0.3] = 0
    weights = np.random.default_rng(1).uniform(size=len(y))
    data = sp.csr_matrix(X) if sparse else X
    with (
        engine("local", workers=2),
        prepare_training(WRITTEN(), data, y, sample_weight=weights) as ctx,
    ):
        got_X, got_y, got_w = _gathered(ctx.group.run(_block))
        uris = [uri for uris in ctx.group.run(_part_paths) for uri in uris]
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_w, weights)
    assert len(uris) == 2
    assert all(uri.startswith(os.path.join(parts_root, _handoff.PART_DIR_PREFIX)) for uri in uris)
    assert not any(os.path.exists(os.path.dirname(os.path.dirname(u))) for u in uris)


def test_without_room_in_shared_memory_the_parts_go_to_the_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(_handoff.SHARED_MEMORY_ENV, "1")
    monkeypatch.setattr(_handoff, "SHARED_MEMORY_HEADROOM", 1 << 62)  # no machine has that
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X, y = _data()
    with engine("local", workers=2), prepare_training(WRITTEN(), X, y) as ctx:
        uris = [uri for uris in ctx.group.run(_part_paths) for uri in uris]
        written = sorted(p.name for p in tmp_path.glob(_handoff.PART_DIR_PREFIX + "*/train/*"))
        got_X, got_y, _ = _gathered(ctx.group.run(_block))
    assert all(uri.startswith(str(tmp_path / _handoff.PART_DIR_PREFIX)) for uri in uris)
    assert written == [f"part-0000{i}.{key}.npy" for i in (0, 1) for key in ("X", "y")]
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)
    assert list(tmp_path.iterdir()) == []  # removed on close


def test_no_shared_memory_without_room_for_the_parts_and_the_margin(tmp_path, monkeypatch):
    monkeypatch.setattr(_handoff, "SHARED_MEMORY", tmp_path)  # a stand-in with known free space
    free = shutil.disk_usage(tmp_path).free
    assert not _handoff._shared_memory_fits(free)  # no room for the margin
    monkeypatch.setattr(_handoff, "SHARED_MEMORY", tmp_path / "missing")
    assert not _handoff._shared_memory_fits(1)


@pytest.mark.parametrize("estimator", [SHARED, WRITTEN])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_in_any_part_is_the_clear_error_and_leaves_nothing(
    bad, sparse, estimator, monkeypatch, own_prefix, parts_root
):
    monkeypatch.setattr(_handoff, "CHUNK_BYTES", 64)
    X, y = _data(n=400)
    X[350, 5] = bad  # in the second worker's part, in a later chunk
    X[390, 2] = bad  # a smaller column further down: the dense message names column 2
    data = sp.csr_matrix(X) if sparse else X
    with pytest.raises(DataError) as exact:
        check_finite(data, estimator.__name__)
    if estimator is WRITTEN and sparse:
        data = data.toarray()  # GaussianNB takes dense input; the check is the same
        with pytest.raises(DataError) as exact:
            check_finite(data, estimator.__name__)
    with engine("local", workers=2), pytest.raises(DataError) as raised:
        estimator().fit(data, y)
    assert str(raised.value) == str(exact.value)
    column = 5 if sparse and estimator is SHARED else 2
    assert f"first in column {column}" in str(raised.value)
    assert _part_dirs(own_prefix) == set()


@pytest.mark.parametrize("estimator", [SHARED, WRITTEN])
def test_finite_values_whose_sum_overflows_are_accepted(estimator):
    X, y = _data(n=100, d=3)
    X[:, 2] = np.float32(3e38) * np.sign(X[:, 2])  # the float32 sum overflows to +-inf
    X[:50, 2] = np.float32(3e38)
    with engine("local", workers=2), prepare_training(estimator(), X, y) as ctx:
        got_X, _, _ = _gathered(ctx.group.run(_block))
    np.testing.assert_array_equal(got_X, X)


def _block_and_uris(state):
    block = training_block(state, "train")
    return block, [shard.uri for shard in state.shards]


def _in_part_order(results):
    """Each worker owns one whole part here; order the blocks by their part's index."""
    return sorted(results, key=lambda result: [int(uri.rsplit("/", 1)[1]) for uri in result[1]])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
def test_in_process_workers_read_the_callers_arrays_in_place_and_read_only(
    sparse, workers, own_prefix
):
    X, y = _data()
    X[X < 0.3] = 0
    weights = np.random.default_rng(1).uniform(size=len(y))
    data = sp.csr_matrix(X) if sparse else X
    values = data.data if sparse else data
    with (
        engine("local", workers=workers),
        prepare_training(SHARED(), data, y, sample_weight=weights) as ctx,
    ):
        assert ctx.group.shares_memory
        results = _in_part_order(ctx.group.run(_block_and_uris))
        assert _part_dirs(own_prefix) == set()  # nothing written
        for block, _ in results:
            block_values = block.X.data if sparse else block.X
            assert np.shares_memory(block_values, values)  # a view, not a copy
            with pytest.raises(ValueError, match="read-only"):
                block_values[0] = 1.0
        got = [np.asarray(b.X.toarray() if sparse else b.X) for b, _ in results]
        np.testing.assert_array_equal(np.concatenate(got), X)
        np.testing.assert_array_equal(np.concatenate([b.y for b, _ in results]), y)
        np.testing.assert_array_equal(
            np.concatenate([b.sample_weight for b, _ in results]), weights
        )
    assert values.flags.writeable  # the caller's own array is untouched
    uri = results[0][1][0]
    assert uri.startswith(_handoff.SHARED_PREFIX)
    with pytest.raises(DataError, match="not in this process"):
        load_array_part(uri)  # released when the fit ended


def _fail(state):
    training_block(state, "train")
    raise RuntimeError("worker failure after loading")


def test_no_part_directory_is_left_after_a_fit_succeeds_or_fails(own_prefix, parts_root):
    X, y = _data()
    with engine("local", workers=2):
        WRITTEN().fit(X, y)
        assert _part_dirs(own_prefix) == set()
        with pytest.raises(TaskFailed, match="worker failure after loading"):
            with prepare_training(WRITTEN(), X, y) as ctx:
                during = _part_dirs(own_prefix)
                ctx.group.run(_fail)
    assert len(during) == 1
    assert all(path.startswith(os.path.join(parts_root, own_prefix)) for path in during)
    assert _part_dirs(own_prefix) == set()


@pytest.mark.parametrize(
    "y",
    [
        np.array([3, 0, 7, 3, 7, 9]),  # non-negative ints with gaps
        np.array([0, 1, 2, 1, 0]),  # 0..k-1: the labels are their own indices
        np.array([1, 2, 2, 1], dtype=np.uint8),
        np.array([5, 0, 5, 70000], dtype=np.int32),  # the count array may grow to 64k
        np.array([9, 3, 3], dtype=np.uint64),
        np.array([-2, 5, -2, 0, 5]),  # negative
        np.array([2**40, 1, 2**40]),  # too large to count
        np.array([2**63 + 1, 2, 2], dtype=np.uint64),
        np.array(["b", "a", "c", "a"]),
        np.array([True, False, True]),
        np.array([0.5, -1.0, 0.5, 2.0]),
        np.random.default_rng(0).integers(0, 50, 10_000),
    ],
    ids=lambda y: f"{y.dtype}-{y.size}",
)
def test_encode_labels_matches_numpy_unique(y):
    classes, indices = encode_labels(y, "M")
    want_classes, want_indices = np.unique(y, return_inverse=True)
    assert classes.dtype == want_classes.dtype and indices.dtype == np.int64
    np.testing.assert_array_equal(classes, want_classes)
    np.testing.assert_array_equal(indices, want_indices)


def test_encode_labels_of_a_single_class_is_a_clear_error():
    for y in ([4, 4, 4], np.zeros(5, dtype=np.uint8), ["a"]):
        with pytest.raises(DataError, match="at least two classes"):
            encode_labels(y, "M")
