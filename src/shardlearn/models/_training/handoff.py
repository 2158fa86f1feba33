"""Hand-off of in-memory arrays (``fit(X, y)``) to the workers: shared, or through files.

Both ways split the rows into one contiguous part per worker (features, class indices, weights)
and describe each part by a :class:`~shardlearn.data.Shard` record, so the engine assigns (and,
after a WorkerLost, reassigns) them like Parquet shards; :func:`load_array_part` gives a worker
its part back, whichever way it was handed off.

Shared (:func:`share_arrays`), for workers that run in this process (threads, or the process
itself: ``WorkerGroup.shares_memory``): each part is a read-only view of the caller's arrays,
registered under a token until :func:`release_shared` (the training context does it when it
closes). Nothing is copied or written, and no NaN/inf check happens here: the caller checks
the parts on the workers (:func:`non_finite_parts`), in parallel.

Through files (:func:`hand_off_arrays`), for worker processes: each part is written as ``.npy``
files and mapped back on the worker; the files stay on disk until the training context closes
and removes the directory.

Where the parts go
    The default temporary directory (``$TMPDIR``, see :func:`tempfile.gettempdir`): the pages
    written stay in the page cache, the workers map them, and the directory is normally removed
    before the kernel writes them back (unless the parts exceed the dirty-page background
    threshold or the fit outlasts ``vm.dirty_expire_centisecs``). With
    ``SHARDLEARN_SHARED_MEMORY=1`` they go to shared memory (``/dev/shm``, a tmpfs: no disk
    writeback at all, e.g. for a slow or busy ``/tmp`` disk) when it has room for them with a
    margin (:data:`SHARED_MEMORY_SLACK` times their size plus :data:`SHARED_MEMORY_HEADROOM`,
    both in free tmpfs space and in available RAM: tmpfs pages cannot be evicted), else (e.g.
    Docker's default 64 MB ``/dev/shm``) to the temporary directory. Either way the directory is
    named ``shardlearn-fit-*``.

    Why not shared memory by default: measured on Linux 6.18 with an ext4 ``/tmp``, 2M x 100
    float32 rows (800 MB) in two parts, writing to the page cache (large folios) took 0.42 s of
    CPU against 0.60 s to tmpfs (4 KiB pages), and each worker's first pass over its mapped part
    0.05 s against 0.08 s; at 10M rows (4 GB, half of it written back during the hand-off) the
    hand-off took 4.1 s against 5.5 s.

How they are written
    One thread per part (file writes and numpy reductions release the GIL), each writing its
    part in chunks of :data:`CHUNK_BYTES`. While a chunk is in cache the thread sums it: NaN and
    infinity propagate through a sum, so a finite sum proves the chunk is finite without a
    boolean copy of the data. A non-finite sum (a bad value, or finite values overflowing) gets
    the exact check of that chunk; a real NaN/inf stops every writer and :func:`check_finite`
    on the whole matrix raises the DataError that names the first bad column.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.lib import format as npy_format

from shardlearn.exceptions import DataError

__all__ = [
    "PART_DIR_PREFIX",
    "SHARED_MEMORY_ENV",
    "SHARED_PREFIX",
    "check_finite",
    "hand_off_arrays",
    "load_array_part",
    "non_finite_parts",
    "part_directory",
    "release_shared",
    "share_arrays",
]

PART_DIR_PREFIX = "shardlearn-fit-"
#: Set to ``1`` to write the parts to shared memory when it has room (see the module notes).
SHARED_MEMORY_ENV = "SHARDLEARN_SHARED_MEMORY"
SHARED_MEMORY = Path("/dev/shm")
# Room left in shared memory and RAM besides the parts: other processes (Ray's object store
# lives in /dev/shm too) must not be starved by a fit.
SHARED_MEMORY_SLACK = 1.1
SHARED_MEMORY_HEADROOM = 256 * 2**20
# Small enough that a chunk is still in the core's cache when it is written after its sum.
CHUNK_BYTES = 1 << 20
#: URI prefix of a shared part: ``shared://TOKEN/INDEX``.
SHARED_PREFIX = "shared://"
# Parts registered by share_arrays, by token: (X, y, weights) views per part.
_SHARED: dict[str, list[tuple[Any, np.ndarray, np.ndarray | None]]] = {}
_SHARED_LOCK = threading.Lock()


def check_finite(X: Any, owner: str) -> None:
    """DataError when ``X`` holds NaN or infinity (names the first bad column)."""
    values = X.data if sp.issparse(X) else X
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        if sp.issparse(X):
            bad = X.indices[~np.isfinite(X.data)][0]
        else:
            bad = int(np.flatnonzero(~np.isfinite(X).all(axis=0))[0])
        raise DataError(
            f"{owner}: the features contain NaN or infinity (first in column {bad}). "
            "Impute or drop them, e.g. with Pipeline(Preprocessor.auto(schema), model)."
        )


def part_directory(nbytes: int) -> str:
    """A new ``shardlearn-fit-*`` directory for ``nbytes`` of parts (see the module notes)."""
    wanted = os.environ.get(SHARED_MEMORY_ENV, "").strip() == "1"
    root = str(SHARED_MEMORY) if wanted and _shared_memory_fits(nbytes) else None
    return tempfile.mkdtemp(prefix=PART_DIR_PREFIX, dir=root)


def _shared_memory_fits(nbytes: int) -> bool:
    import psutil

    need = nbytes * SHARED_MEMORY_SLACK + SHARED_MEMORY_HEADROOM
    try:
        if not (SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK | os.X_OK)):
            return False
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:
        return False
    return free >= need and psutil.virtual_memory().available >= need


def hand_off_arrays(
    X: Any, y: np.ndarray, weights: np.ndarray | None, n_parts: int, owner: str
) -> tuple[str, list[Any]]:
    """Write the rows as ``n_parts`` parts into a new directory, checking that X is finite.

    Parameters
    ----------
    X : ndarray or csr_matrix
        Float features (a CSR matrix with sorted indices).
    y : ndarray of int64
        Class index of every row.
    weights : ndarray or None
        Sample weights.
    n_parts : int
        Number of parts (contiguous row ranges, sizes differing by at most one row).
    owner : str
        Estimator name for error messages.

    Returns
    -------
    directory : str
        The directory holding the parts; the caller removes it when the workers are done.
    shards : list of Shard
        One per part, in row order (``uri`` is the part's path without the ``.KEY.npy`` suffix).

    Raises
    ------
    DataError
        When X holds NaN or infinity; the directory is removed then, as on any other error.
    """
    extra = y.nbytes + (0 if weights is None else weights.nbytes)
    matrix = [X.data, X.indices, X.indptr] if sp.issparse(X) else [X]
    directory = part_directory(sum(a.nbytes for a in matrix) + extra)
    try:
        return directory, _write_parts(Path(directory), X, y, weights, n_parts, owner)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _write_parts(
    root: Path, X: Any, y: np.ndarray, weights: Any, n_parts: int, owner: str
) -> list[Any]:
    (root / "train").mkdir(parents=True)
    stop = threading.Event()
    ranges = _part_bounds(X.shape[0], n_parts)
    jobs = [(index, a, b) for index, (a, b) in enumerate(ranges)]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_stopping, stop, root, job, X, y, weights) for job in jobs]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C: let the writers stop before the directory goes
            stop.set()
            raise
    results = [future.result() for future in futures]  # a writer's error is raised here
    if not all(finite for _, finite in results):
        check_finite(X, owner)  # raises the DataError naming the first bad column
    return [shard for shard, _ in results]


def _stopping(
    stop: Any, root: Path, job: tuple[int, int, int], X: Any, y: np.ndarray, weights: Any
) -> tuple[Any, bool]:
    """:func:`_write_part`; a failing writer (e.g. a full disk) stops the others too."""
    try:
        return _write_part(root, job, X, y, weights, stop)
    except BaseException:
        stop.set()
        raise


def _write_part(
    root: Path, job: tuple[int, int, int], X: Any, y: np.ndarray, weights: Any, stop: Any
) -> tuple[Any, bool]:
    """Write rows ``start:stop`` of part ``index``; returns its Shard and whether X was finite."""
    index, start, end = job
    rel = f"train/part-{index:05d}"
    base = root / rel
    arrays = {"y": y[start:end]}
    if weights is not None:
        arrays["w"] = weights[start:end]
    if sp.issparse(X):
        # Views of the CSR arrays (no copy of the part), with the row pointers rebased.
        lo, hi = int(X.indptr[start]), int(X.indptr[end])
        arrays |= {"data": X.data[lo:hi], "indices": X.indices[lo:hi]}
        arrays["indptr"] = X.indptr[start : end + 1] - X.indptr[start]
        arrays["shape"] = np.asarray([end - start, X.shape[1]], dtype=np.int64)
        checked = "data"
    else:
        arrays["X"] = X[start:end]
        checked = "X"
    finite = True
    for key, value in arrays.items():
        finite &= _write_npy(f"{base}.{key}.npy", value, key == checked, stop)
    nbytes = sum(value.nbytes for value in arrays.values())
    shard = _part_shard(index, str(base), arrays["y"], nbytes)
    return shard, finite


def _write_npy(path: str, array: np.ndarray, check: bool, stop: Any) -> bool:
    """Write ``array`` as a ``.npy`` file chunk by chunk; False when ``check`` found NaN/inf.

    A non-finite value sets ``stop``; a set ``stop`` ends the write early (the fit is failing).
    """
    array = np.ascontiguousarray(array)
    flat = array.reshape(-1)
    check = check and np.issubdtype(array.dtype, np.floating)
    step = max(1, CHUNK_BYTES // max(1, array.itemsize))
    with open(path, "wb") as fh:
        npy_format.write_array_header_1_0(fh, npy_format.header_data_from_array_1_0(array))
        for first in range(0, flat.size, step):
            if stop.is_set():
                return True
            chunk = flat[first : first + step]
            if check and not _finite(chunk):
                stop.set()
                return False
            fh.write(chunk.data.cast("B"))
    return True


def _finite(values: np.ndarray) -> bool:
    """Whether every value is finite: a finite sum proves it; an infinite sum may be an
    overflow of finite values, so it gets the exact check."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum()
    return bool(np.isfinite(total) or np.isfinite(values).all())


def share_arrays(
    X: Any, y: np.ndarray, weights: np.ndarray | None, n_parts: int
) -> tuple[str, list[Any]]:
    """Register read-only views of ``n_parts`` contiguous row ranges for in-process workers.

    Parameters
    ----------
    X : ndarray or csr_matrix
        Float features (a CSR matrix with sorted indices).
    y : ndarray of int64
        Class index of every row.
    weights : ndarray or None
        Sample weights.
    n_parts : int
        Number of parts (sizes differing by at most one row).

    Returns
    -------
    token : str
        Pass it to :func:`release_shared` when the workers are done.
    shards : list of Shard
        One per part, in row order, with ``uri`` ``shared://TOKEN/INDEX``.
    """
    token = uuid.uuid4().hex
    parts, shards = [], []
    for index, (start, end) in enumerate(_part_bounds(X.shape[0], n_parts)):
        part_weights = None if weights is None else _read_only(weights[start:end])
        part = (_rows_view(X, start, end), _read_only(y[start:end]), part_weights)
        parts.append(part)
        nbytes = sum(_nbytes(value) for value in part if value is not None)
        shards.append(_part_shard(index, f"{SHARED_PREFIX}{token}/{index}", part[1], nbytes))
    with _SHARED_LOCK:
        _SHARED[token] = parts
    return token, shards


def release_shared(token: str) -> None:
    """Forget the parts registered under ``token`` (the caller's arrays are untouched)."""
    with _SHARED_LOCK:
        _SHARED.pop(token, None)


def non_finite_parts(state: Any) -> bool:
    """Worker function: whether any of this worker's array parts holds NaN or infinity."""
    for shard in state.shards:
        X = load_array_part(shard.uri)[0]
        values = X.data if sp.issparse(X) else X
        if np.issubdtype(values.dtype, np.floating) and not _finite(values.reshape(-1)):
            return True
    return False


def _part_shard(index: int, uri: str, y: np.ndarray, nbytes: int) -> Any:
    """The Shard record of part ``index`` (train split) with class indices ``y``."""
    from shardlearn.data import Shard

    counts = np.bincount(y, minlength=0)
    return Shard(
        split="train",
        index=index,
        path=f"train/part-{index:05d}",
        uri=uri,
        rows=len(y),
        bytes=int(nbytes),
        sha256="",
        class_counts={str(k): int(v) for k, v in enumerate(counts) if v},
    )


def _part_bounds(n_rows: int, n_parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n_rows, max(1, n_parts) + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _read_only(values: np.ndarray) -> np.ndarray:
    """A view that cannot be written through (the caller's array stays writeable)."""
    view = values.view()
    view.flags.writeable = False
    return view


def _rows_view(X: Any, start: int, end: int) -> Any:
    """Rows ``start:end`` of ``X`` as a read-only view (CSR: views of data and indices)."""
    if not sp.issparse(X):
        return _read_only(X[start:end])
    lo, hi = int(X.indptr[start]), int(X.indptr[end])
    indptr = X.indptr[start : end + 1] - X.indptr[start]
    data, indices = _read_only(X.data[lo:hi]), _read_only(X.indices[lo:hi])
    return sp.csr_matrix((data, indices, indptr), shape=(end - start, X.shape[1]), copy=False)


def _nbytes(value: Any) -> int:
    if sp.issparse(value):
        return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
    return int(value.nbytes)


def _shared_part(uri: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
    token, _, index = uri.removeprefix(SHARED_PREFIX).partition("/")
    with _SHARED_LOCK:
        parts = _SHARED.get(token)
    if parts is None:
        raise DataError(
            f"The in-memory array part {uri} is not in this process: shared parts are readable "
            "only by workers that run in the process that fitted (threads or in-process), and "
            "only until that fit ends."
        )
    return parts[int(index)]


def load_array_part(uri: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """Features, class indices and weights (or None) of the part handed off at ``uri``.

    A shared part (``shared://``) is the registered view itself.

    The features of a written part are mapped read-only, not read: the driver has just written
    them, so the pages are in memory (the page cache or shared memory) and the worker skips a
    copy of the part. (``MAP_POPULATE``, ``MADV_POPULATE_READ`` or ``MADV_WILLNEED`` made the
    first pass no faster.)
    """
    if uri.startswith(SHARED_PREFIX):
        return _shared_part(uri)

    def load(key: str, mmap_mode: Any = None) -> np.ndarray:
        return np.load(f"{uri}.{key}.npy", allow_pickle=False, mmap_mode=mmap_mode)

    if Path(f"{uri}.X.npy").exists():
        X = load("X", "r")
    else:
        X = sp.csr_matrix(
            (load("data", "r"), load("indices", "r"), load("indptr")), shape=load("shape")
        )
    w = load("w") if Path(f"{uri}.w.npy").exists() else None
    return X, load("y"), w
