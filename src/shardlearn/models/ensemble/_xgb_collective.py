"""XGBoost's collective over a WorkerGroup: rendezvous, per-worker DMatrix, chunked training.

The driver runs XGBoost's ``RabitTracker``; every worker joins the communicator with
``xgboost.collective.CommunicatorContext`` (rank = worker rank, through ``dmlc_task_id`` and the
tracker's ``sortby="task"``) and boosts on its own rows; XGBoost allreduces the gradient
histograms, so all workers hold the same booster.

Training runs in *chunks* of ``checkpoint_interval`` rounds. Between chunks the driver keeps
the booster (the checkpoint); each chunk is one ``group.run`` with a fresh tracker and
continues from the checkpoint. The workers keep their ``QuantileDMatrix`` in ``state.cache``
under a *session* id, so the quantile sketch is built once per session.

A chunk is the same as the middle of one long run. :func:`boost_worker` runs
``xgboost.train``'s loop itself (``Booster.update``) so it can pass the *global* round number,
and trains with ``seed_per_iteration``: XGBoost reseeds its RNG from (seed, round) before
every round. The tree updater's column sampler, though, is seeded once, from the first draw
of that RNG, when the updater is created, and then keeps its own state (and a resumed booster
creates a new one); the row sample is drawn from the same RNG right after that seed, so it too
depends on whether the updater is new. So a fit that samples (``subsample`` or a
``colsample_*`` below 1) reloads the booster's configuration before every round but its first
(a booster made for a chunk has a new updater already), which recreates the updater: row and
column samples are then a function of (seed, round) alone, and a checkpointed run equals an
uninterrupted one bit for bit. The reload loads one saved copy of the configuration each round
rather than saving it anew, and that copy skips XGBoost's unused-parameter check
(:class:`_UpdaterReload`): the same trees for about half the cost (Adult, 50 rounds, one
thread: +5-7% of the training CPU over no reload, against +12-16% for
``load_config(save_config())`` every round). A fit that samples nothing draws no random number
at all (the hist updater keeps no other state from one tree to the next), so it skips the
reload altogether (a fresh updater reallocates its buffers; with workers, the new sampler's
seed is one more broadcast per round). (With one worker and no sampling this is exactly
``xgboost.train``; with sampling it is that same loop in one process.)

Validation scores. XGBoost's distributed ``auc`` and ``aucpr`` are not the values on all
rows: each worker computes the area on its own rows and the areas are averaged, so the score,
and with it the early-stopping round, depends on how rows were partitioned. For those metrics
each worker folds its validation predictions into a :class:`shardlearn.metrics.ScoreHistogram`
kept exact (distinct scores), the histograms are exchanged with ``collective.broadcast`` and
merged in rank order on every worker, and the area is computed from the merged histogram with
XGBoost's definitions (:func:`validation_score`). It equals single-process XGBoost's value on
the same predictions; the price is sorting the valid rows and moving each worker's distinct
scores to every worker once per round. The other metrics (log loss, error) are weighted sums
that XGBoost allreduces exactly, so its own value is used.

Failure handling. The collective cannot absorb a new member mid-session: a replacement worker
(empty cache) must not join a running group, and the survivors' cached matrices no longer
match a replacement's. So:

* before each chunk a cheap ``ping`` run tells whether every worker still holds the session's
  matrix; a worker replaced since the last chunk answers "missing" and a new session starts
  (every worker rebuilds its matrix under a new tracker);
* a worker that dies *during* a chunk (or a build) ends that run's session. The engine finds it
  dead at once and tells the driver (``WorkerGroup.on_worker_lost``), which stops the run's
  tracker (:meth:`Rendezvous.abort`): survivors still waiting in it for their peer -- one lost
  before it joined would otherwise keep them there until ``TRACKER_TIMEOUT`` -- fail at once,
  and survivors already training together fail in their next allreduce as the lost worker's
  sockets close. They report ``comm_failed`` instead of raising; the engine's retry of the dead
  rank reports ``replaced`` without joining (training: an empty cache) or is refused by the
  stopped tracker (a build), and the driver resumes from the last checkpoint in a new session.

In-process execution (``execution_="in_process"``, see
:mod:`shardlearn.models._training.execution`): :func:`train_in_process` runs the same loop
(:func:`_boost_rounds`, same per-round reseeding) in the calling process on its one block, with no
communicator and no tracker, all rounds in one go (no checkpoints: there is no worker to lose),
reporting every round. Without a communicator XGBoost's collective calls are no-ops, so this is
single-process XGBoost on all the rows. Inside a warm scope (a search, :mod:`shardlearn._warm`) its
matrices are built once per feature block and ``max_bin`` and reused by every fit on the same rows.
A small dense block (up to :data:`SMALL_MATRIX_VALUES` values) trains on a plain ``DMatrix``
whose histogram index is built at once (:func:`_binned_dmatrix`) rather than on a
``QuantileDMatrix``: XGBoost sketches both alike -- the same cuts, so the same trees (tests
compare both) -- and the plain one costs about a third of the CPU (Adult's 26k x 92 block: 0.07
s against 0.22 s), at about 9 bytes a value instead of 1, which only a small block can afford.

Warm workers. Inside a warm scope the workers of a group keep their blocks across fits (the
engine passes the scope to them), and a fit's session id is a digest of what its matrices
depend on (:func:`warm_session`: every worker's shards, the preprocessing, classes, label and
``max_bin``). Each worker keeps its matrices in the scope under that id after building them,
and the next fit on the same fold pings with it: when every worker still holds matrices built
from its current blocks, no tracker is started and nothing is binned again; the fit's one
collective set-up is its training's. A worker that lacks them (a replacement) makes every
worker build again, together, as above.

These functions are impure on purpose: they start sockets and global communicator state in the
worker process, which is why they run as one pinned call per worker and never concurrently.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from shardlearn import _warm
from shardlearn.models._training.execution import round_cores
from shardlearn.models._training.fitting import training_block

__all__ = [
    "EarlyStopping",
    "Rendezvous",
    "boost_worker",
    "build_worker",
    "ping_worker",
    "train_in_process",
    "validation_score",
    "xgboost_pr_auc",
]

_CACHE_KEY = "shardlearn.models.boosting.dmatrix"
#: Prefix of the session ids a warm scope keeps matrices for (:func:`warm_session`).
WARM_SESSION = "warm-"
#: Seconds the tracker waits for all workers to connect (and to say goodbye). Blocks are
#: loaded before a tracker starts, so this only covers process scheduling jitter.
TRACKER_TIMEOUT = 120
#: Seconds a worker waits inside one collective operation before giving up on its peers.
COMM_TIMEOUT = 600
#: Attempts a worker makes to connect. A refused connection means the driver has stopped the
#: tracker (it stops a session that lost a worker, :meth:`Rendezvous.abort`): XGBoost's retries
#: would only wait 2 s, then 4 s more, for a tracker that will not come back.
COMM_RETRY = 1
# Substrings of XGBoost errors that mean "a peer went away", not "your data/params are bad".
_COMM_MARKERS = (
    "allreduce",
    "allgather",
    "broadcast",
    "socket",
    "connection",
    "bootstrap",
    "poll",
    "tracker",
    "communicator",
)
#: Parameters every worker adds. XGBoost then reseeds its RNG from (seed, round) before each
#: round, and the driver passes the global round numbers, so a run resumed from a checkpoint
#: draws the same row and column samples as one that never stopped.
_WORKER_PARAMS = {"seed_per_iteration": True}
#: The parameters (of those the estimator accepts) that make the hist updater draw random
#: numbers when below 1; with all of them at 1 a round's tree does not depend on the RNG.
_SAMPLING_PARAMS = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")
#: Metrics whose distributed value in XGBoost is not the value on all rows: each worker's area
#: is computed on its own rows and the areas are averaged (AUC weighted by pairs, AUC-PR not
#: weighted). These are computed here from every worker's exact score statistics instead.
GATHERED_METRICS = ("auc", "aucpr")
_MAXIMIZED = ("auc", "aucpr")
#: Distinct scores a worker's ScoreHistogram keeps before binning: every one (exact areas).
_EVERY_SCORE = 2**62


class Rendezvous:
    """One XGBoost tracker on the driver for one collective run of ``n_workers``.

    The driver owns it: :meth:`close` after a run every worker finished, :meth:`abort` as soon
    as the run lost a worker (the engine's ``on_worker_lost``) or the driver gives up.

    Parameters
    ----------
    n_workers : int
        Workers that will join.
    host : str
        Address the workers can reach the driver at.
    """

    def __init__(self, n_workers: int, host: str) -> None:
        from xgboost.tracker import RabitTracker

        self._tracker = RabitTracker(
            n_workers=n_workers, host_ip=host, sortby="task", timeout=TRACKER_TIMEOUT
        )
        self._tracker.start()
        self.worker_args: dict[str, Any] = dict(self._tracker.worker_args())
        self.error: str | None = None
        self._freed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._wait, name="xgboost-tracker", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        from xgboost.core import XGBoostError

        try:
            self._tracker.wait_for()
        except XGBoostError as error:  # stopped by abort(), or a worker vanished
            self.error = str(error)
        self._free()

    def _free(self) -> None:
        """Stop and free the tracker, once (XGBoost's ``free`` first closes its listener)."""
        from xgboost.core import XGBoostError

        with self._lock:
            if self._freed:
                return
            self._freed = True
            try:
                self._tracker.free()
            except XGBoostError:  # a tracker stopped early reports why it stopped
                pass

    def abort(self, wait: float = 30.0) -> None:
        """Stop the tracker now (and its thread: nothing is left behind).

        Closing it closes its connections: a worker waiting in it for a peer that will never
        come (one lost before it joined) fails at once instead of after ``TRACKER_TIMEOUT``,
        and a worker that tries to join later is refused. Workers already training together
        fail by themselves (a lost peer's sockets close), but their tracker would wait for the
        lost one's goodbye for ever: a thread and a port per failure, before this was called.
        """
        self._free()
        self._thread.join(wait)  # the stopped tracker's wait ends at once

    def close(self, wait: float = 30.0) -> None:
        """Wait (briefly) for a healthy run's tracker to finish: every worker has left it."""
        self._thread.join(wait)


def new_session() -> str:
    """A fresh session id (a new set of per-worker matrices)."""
    return uuid.uuid4().hex


def warm_session(ctx: Any, max_bin: int, use_valid: bool) -> str | None:
    """The session id of ``ctx``'s matrices in a warm scope (None outside one, or for array
    input): the same for every fit whose workers hold the same shards with the same
    preprocessing, classes, label, weights and ``max_bin``, so such a fit finds the matrices
    an earlier one built (:func:`ping_worker`) instead of binning the rows again.

    A worker serves kept matrices only when its blocks are the very ones they were built
    from, so rows that differ (extra rows, a rebuilt block) build anew under the same id.
    """
    if not _warm.active() or ctx.dataset is None:
        return None
    shards = [[(s.split, s.uri, s.sha256) for s in part] for part in ctx.group.shards]
    pre = getattr(ctx.preprocessor, "fingerprint", None)
    context = [shards, pre, ctx.classes.tolist(), ctx.dataset.schema.label, max_bin, use_valid]
    digest = hashlib.sha256(json.dumps(context, default=str).encode()).hexdigest()
    return WARM_SESSION + digest[:32]


def ping_worker(state: Any, session: str | None, splits: tuple[str, ...]) -> dict[str, Any]:
    """Load this worker's blocks (cached) and say whether it holds ``session``'s matrices
    (in its cache, or kept in the warm scope by an earlier fit: :func:`warm_session`)."""
    train = training_block(state, "train")
    valid = training_block(state, "valid") if "valid" in splits else None
    valid_rows = 0 if valid is None else valid.n_rows
    cached = state.cache.get(_CACHE_KEY)
    if session is not None and (cached is None or cached["session"] != session):
        kept = _warm.peek("matrix_builds", (_CACHE_KEY, session))
        # Built from these very blocks (the warm scope keeps them): the same rows and bins.
        if kept is not None and kept["blocks"][0] is train:
            if kept["blocks"][1] is None or kept["blocks"][1] is valid:
                cached = state.cache[_CACHE_KEY] = kept
    return {
        "has_session": cached is not None and cached["session"] == session,
        "rows": train.n_rows,
        "valid_rows": valid_rows,
        "counts": np.bincount(np.asarray(train.y, np.int64), minlength=1).tolist(),
    }


def _is_comm_failure(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _COMM_MARKERS)


@contextlib.contextmanager
def _communicator(state: Any, worker_args: dict[str, Any]) -> Iterator[None]:
    """Join the collective as ``state.rank`` (the tracker sorts workers by task id).

    XGBoost prints "Task N got rank N" through Python's stdout when a worker joins; that
    line is swallowed so a fit does not write to the user's terminal.
    """
    from xgboost import collective
    from xgboost.core import XGBoostError

    context = collective.CommunicatorContext(
        **worker_args,
        dmlc_task_id=f"{state.rank:06d}",
        dmlc_timeout=COMM_TIMEOUT,
        dmlc_retry=COMM_RETRY,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        context.__enter__()
    try:
        yield
    except BaseException:
        # The body's error is the one to report. Leaving a group that lost a worker can fail
        # as well (its tracker is stopped) and XGBoost warns about it: that would only repeat
        # the error, on the user's terminal.
        with warnings.catch_warnings(), contextlib.suppress(XGBoostError):
            warnings.simplefilter("ignore")
            context.__exit__(None, None, None)
        raise
    context.__exit__(None, None, None)


def build_worker(
    state: Any, session: str, worker_args: dict[str, Any], max_bin: int, use_valid: bool
) -> dict[str, Any]:
    """Build this worker's QuantileDMatrix (global sketch through the collective) and cache it."""
    from xgboost.core import XGBoostError

    state.cache.pop(_CACHE_KEY, None)
    try:
        with _communicator(state, worker_args):
            matrices = _matrices(state, max_bin, use_valid)
    except XGBoostError as error:
        if _is_comm_failure(str(error)):
            return {"status": "comm_failed", "error": str(error)[:300]}
        raise
    train = training_block(state, "train")
    valid = training_block(state, "valid") if use_valid else None
    state.cache[_CACHE_KEY] = {"session": session, **matrices, "blocks": (train, valid)}
    if session.startswith(WARM_SESSION):  # the next fit on the same rows pings for it
        size = train.nbytes // 4 + (0 if valid is None else valid.nbytes // 4)
        _warm.keep("matrix_builds", (_CACHE_KEY, session), state.cache[_CACHE_KEY], size)
    return {"status": "ok"}


def _matrices(state: Any, max_bin: int, use_valid: bool) -> dict[str, Any]:
    """This worker's train (and valid) QuantileDMatrix; a collective call under a communicator
    (the quantile sketch is merged across the workers)."""
    import xgboost as xgb

    train = training_block(state, "train")
    valid = training_block(state, "valid") if use_valid else None
    dtrain = xgb.QuantileDMatrix(train.X, train.y, weight=train.sample_weight, max_bin=max_bin)
    dvalid = None
    if valid is not None:
        dvalid = xgb.QuantileDMatrix(
            valid.X, valid.y, weight=valid.sample_weight, ref=dtrain, max_bin=max_bin
        )
    return {"train": dtrain, "valid": dvalid}


#: Values (rows x features) up to which an in-process fit's dense training block is binned
#: through a plain ``DMatrix`` (see the module notes): 8M values, about 72 MB.
SMALL_MATRIX_VALUES = 8_000_000


def _in_process_matrices(state: Any, max_bin: int, use_valid: bool) -> dict[str, Any]:
    """:func:`_matrices` for a fit with no communicator: a small dense labelled block trains on
    :func:`_binned_dmatrix` (the same bins as a ``QuantileDMatrix``, for less CPU); the valid
    rows are binned with its cuts, as with a ``QuantileDMatrix``."""
    import xgboost as xgb

    train = training_block(state, "train")
    if not _small_dense(train) or train.y is None:
        return _matrices(state, max_bin, use_valid)
    dtrain = _binned_dmatrix(train, max_bin)
    dvalid = None
    if use_valid:
        valid = training_block(state, "valid")
        dvalid = xgb.QuantileDMatrix(
            valid.X, valid.y, weight=valid.sample_weight, ref=dtrain, max_bin=max_bin
        )
    return {"train": dtrain, "valid": dvalid}


def _small_dense(block: Any) -> bool:
    """Whether ``block``'s rows are binned through a plain ``DMatrix`` (see the module notes)."""
    X = block.X
    return isinstance(X, np.ndarray) and 0 < X.shape[0] and X.size <= SMALL_MATRIX_VALUES


def _binned_dmatrix(block: Any, max_bin: int) -> Any:
    """A ``DMatrix`` of ``block`` with its histogram index for ``max_bin`` built now.

    Hist training builds the index at its first round; fits sharing the matrix (a search's
    trials, on threads) would then build it at once. One round of a throwaway one-split booster
    builds it here: the matrix keeps it, and every booster with the same ``max_bin`` uses it.
    """
    import xgboost as xgb

    matrix = xgb.DMatrix(block.X, block.y, weight=block.sample_weight)
    xgb.Booster({"tree_method": "hist", "max_bin": max_bin, "max_depth": 1}, [matrix]).update(
        matrix, 0
    )
    return matrix


def _reused_matrices(state: Any, max_bin: int, use_valid: bool) -> dict[str, Any]:
    """:func:`_matrices` without a communicator, kept across fits in a warm scope (a search:
    every trial on a fold bins the same rows) and built once per feature block and ``max_bin``.

    Keyed by the blocks themselves: the scope keeps them alive (the key cannot name another
    block), and a block that is not the kept one (rebuilt, or extra rows appended) builds anew.
    """
    train = training_block(state, "train")
    valid = training_block(state, "valid") if use_valid else None

    def build() -> dict[str, Any]:
        return {**_in_process_matrices(state, max_bin, use_valid), "blocks": (train, valid)}

    # A binned matrix holds about one byte per value (max_bin <= 256) plus labels/weights; a
    # plain DMatrix 8 more (a column index and the value), as the block's 4-byte values do.
    size = (train.nbytes * 9 if _small_dense(train) else train.nbytes) // 4
    size += 0 if valid is None else valid.nbytes // 4
    key = (id(train), id(valid), max_bin)
    kept = _warm.fetch("matrix_builds", key, build, lambda _: size)
    if kept["blocks"][0] is not train or kept["blocks"][1] is not valid:
        kept = build()
    return kept


def boost_worker(
    state: Any,
    session: str,
    worker_args: dict[str, Any],
    params: dict[str, Any],
    first_round: int,
    rounds: int,
    model: bytes | None,
    stopping: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train rounds ``first_round`` to ``first_round + rounds - 1`` on top of ``model``.

    Rank 0 returns the booster, the rounds trained, the chunk's validation scores and the
    early-stopping state; the other ranks only say the chunk went well.
    """
    from xgboost.core import XGBoostError

    cached = state.cache.get(_CACHE_KEY)
    if cached is None or cached["session"] != session:
        # A replacement worker: it cannot join a collective that has already failed.
        return {"status": "replaced"}
    metric = str(params["eval_metric"])
    stopper = None
    if stopping is not None:
        stopper = EarlyStopping(**stopping, maximize=metric in _MAXIMIZED)
    try:
        with _communicator(state, worker_args):
            booster, scores, evaluating = _boost_rounds(
                cached, params, first_round, rounds, model, stopper
            )
    except XGBoostError as error:
        if _is_comm_failure(str(error)):
            return {"status": "comm_failed", "error": str(error)[:300]}
        raise
    if state.rank != 0:
        return {"status": "ok"}
    return {
        "status": "ok",
        "model": bytes(booster.save_raw("ubj")),
        "rounds": booster.num_boosted_rounds() - first_round,
        "history": {"valid": {metric: scores}} if cached["valid"] is not None else {},
        "stopping": stopper.state() if stopper is not None else None,
        "evaluate_seconds": evaluating,
    }


def train_in_process(
    state: Any,
    params: dict[str, Any],
    max_bin: int,
    use_valid: bool,
    rounds: int,
    stopping: dict[str, Any] | None,
    on_round: Callable[[int, float | None], None] | None = None,
    model: bytes | None = None,
    first_round: int = 0,
) -> dict[str, Any]:
    """All ``rounds`` in the calling process, no communicator (see the module notes).

    Starts from round 0, or continues ``model`` (a warm start) from round ``first_round``.
    ``on_round(rounds_done, valid_score_or_None)`` is called after every round. Returns the
    booster itself (not serialised), its validation history, the early-stopping state and the
    seconds spent computing validation scores.
    """
    cached = _reused_matrices(state, max_bin, use_valid)
    metric = str(params["eval_metric"])
    stopper = None
    if stopping is not None:
        stopper = EarlyStopping(**stopping, maximize=metric in _MAXIMIZED)
    booster, scores, evaluating = _boost_rounds(
        cached, params, first_round, rounds, model, stopper, on_round
    )
    return {
        "booster": booster,
        "history": {"valid": {metric: scores}} if cached["valid"] is not None else {},
        "stopping": stopper.state() if stopper is not None else None,
        "evaluate_seconds": evaluating,
    }


def _boost_rounds(
    cached: dict[str, Any],
    params: dict[str, Any],
    first_round: int,
    rounds: int,
    model: bytes | None,
    stopper: EarlyStopping | None,
    on_round: Callable[[int, float | None], None] | None = None,
) -> tuple[Any, list[float], float]:
    """The boosting loop of one chunk (``xgboost.train``'s, with global round numbers).

    Returns the booster, the validation scores and the seconds spent computing them.
    """
    import xgboost as xgb

    dtrain, dvalid = cached["train"], cached["valid"]
    matrices = [dtrain] if dvalid is None else [dtrain, dvalid]
    start = None if model is None else bytearray(model)
    booster = xgb.Booster({**params, **_WORKER_PARAMS}, matrices, model_file=start)
    reloader = _UpdaterReload(booster) if _draws_samples(params) else None
    n_classes = int(params.get("num_class", 2))
    scores: list[float] = []
    evaluating = 0.0
    threads = None
    for iteration in range(first_round, first_round + rounds):
        # Cores freed by other work (a search's refit after its last trials): same trees.
        wanted = round_cores()
        if wanted is not None and wanted != threads:
            booster.set_param("nthread", str(wanted))
            threads = wanted
            if reloader is not None:
                reloader.forget()
        if reloader is not None and iteration > first_round:
            # A fresh tree updater (see _UpdaterReload), as after a checkpoint. The booster
            # made above has none yet: its first round needs no reload.
            reloader.reload()
        booster.update(dtrain, iteration=iteration)
        if dvalid is None:
            if on_round is not None:
                on_round(iteration + 1, None)
            continue
        started = time.perf_counter()
        scores.append(validation_score(booster, dvalid, str(params["eval_metric"]), n_classes))
        evaluating += time.perf_counter() - started
        if on_round is not None:
            on_round(iteration + 1, scores[-1])
        if stopper is not None and stopper.update(scores[-1], iteration):
            break
    if reloader is not None:
        reloader.restore()
    return booster, scores, evaluating


class _UpdaterReload:
    """Gives ``booster`` a fresh tree updater before a round, for less than a full
    ``load_config(save_config())``.

    Loading a configuration recreates the updater, so its column sampler is seeded this round
    from the RNG that ``seed_per_iteration`` has just reseeded from (seed, round), and the row
    sample takes the RNG's second draw, as after a checkpoint. Without it the sampler of the
    first round lives on (and a restarted chunk starts a new one). The prediction caches
    survive the reload.

    Nothing a round changes is read back by XGBoost's ``LoadConfig`` (the tree count and
    base score are the model's, not the configuration's), so the configuration is saved once
    and the same text loaded every round; :meth:`forget` after ``set_param`` saves it anew.
    The loaded copy also skips XGBoost's check for unused parameters (it serialises the whole
    configuration on every reconfiguration): the booster was checked when it was configured
    with these parameters, before the text was saved, and :meth:`restore` gives it back its
    own setting after the last round. The trees are the same bit for bit as with
    ``load_config(save_config())`` every round (tests compare them).
    """

    def __init__(self, booster: Any) -> None:
        self._booster = booster
        self._config: str | None = None
        self._validate: str | None = None  # the booster's own setting, before the first reload

    def forget(self) -> None:
        """Save the configuration again before the next reload (a parameter changed)."""
        self._config = None

    def reload(self) -> None:
        """Load the saved configuration (saving it first if needed): a fresh tree updater."""
        if self._config is None:
            config = json.loads(self._booster.save_config())
            generic = config["learner"]["generic_param"]
            if self._validate is None:
                self._validate = str(generic["validate_parameters"])
            generic["validate_parameters"] = "0"
            self._config = json.dumps(config)
        self._booster.load_config(self._config)

    def restore(self) -> None:
        """Give the booster back its own check for unused parameters (after the last round)."""
        if self._validate is not None:
            self._booster.set_param("validate_parameters", self._validate)


def _draws_samples(params: dict[str, Any]) -> bool:
    """Whether a fit with these XGBoost parameters draws random row or column samples."""
    return any(float(params.get(name, 1.0)) < 1.0 for name in _SAMPLING_PARAMS)


def validation_score(booster: Any, dvalid: Any, metric: str, n_classes: int) -> float:
    """``metric`` on the valid rows of all workers, equal to single-process XGBoost's value.

    A collective call: every worker must call it in the same round.
    """
    if metric not in GATHERED_METRICS:
        # XGBoost's own value is exact here: a weighted sum allreduced over the workers.
        text = booster.eval_set([(dvalid, "valid")])
        return float(text.rsplit(":", 1)[1])
    from shardlearn.metrics import ScoreHistogram, roc_auc

    proba = np.asarray(booster.predict(dvalid), dtype=np.float64)
    labels = np.asarray(dvalid.get_label(), dtype=np.int64)
    weight = np.asarray(dvalid.get_weight(), dtype=np.float64)
    if weight.size == 0:
        weight = np.ones(labels.size)
    if proba.ndim == 1:
        # Binary: the areas need only the positive class, kept as the one class of a
        # one-class histogram (its "positives" are the rows labelled 1).
        proba, labels = proba[:, None], (labels != 1).astype(np.int64)
    local = ScoreHistogram(proba.shape[1], exact_limit=_EVERY_SCORE).update(labels, proba, weight)
    merged = _merge_across_workers(local)
    if merged.n_classes == 1:
        if metric == "aucpr":
            return xgboost_pr_auc(*merged.counts(0))
        return float(roc_auc(merged, average=None, zero_division=math.nan)[0].value)
    if metric == "aucpr":
        raise ValueError("aucpr is computed for binary problems only.")
    # XGBoost weights the one-vs-rest areas of several classes by the classes' weights.
    return float(roc_auc(merged, average="weighted", zero_division=math.nan).value)


def _merge_across_workers(local: Any) -> Any:
    """Every worker's histogram merged in rank order, identically on every worker."""
    from xgboost import collective

    world = collective.get_world_size()
    if world <= 1:
        return local
    rank = collective.get_rank()
    merged = None
    for root in range(world):
        part = collective.broadcast(local if root == rank else None, root)
        merged = part if merged is None else merged.merge(part)
    return merged


def xgboost_pr_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """XGBoost's ``aucpr`` from the positive and negative weight per score, highest first.

    XGBoost interpolates precision between the recall points of distinct scores (Davis and
    Goadrich) rather than taking sklearn's step-wise average precision. The expressions and
    the summation order below are those of its ``BinaryPRAUC``, so the value agrees with one
    process's to the last bit or so (numpy's ``log`` and the C library's may round apart).
    """
    total_positive = float(positive.sum())
    if total_positive <= 0 or float(negative.sum()) <= 0:
        return math.nan
    tp, fp = np.cumsum(positive), np.cumsum(negative)
    tp_prev = np.concatenate(([0.0], tp[:-1]))
    fp_prev = np.concatenate(([0.0], fp[:-1]))
    recall, recall_prev = tp / total_positive, tp_prev / total_positive
    rises = tp != tp_prev
    slope = np.divide(fp - fp_prev, tp - tp_prev, out=np.zeros_like(tp), where=rises)
    a = slope + 1.0
    b = np.where(rises, (fp_prev - slope * tp_prev) / total_positive, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # the b == 0 rows are not used
        logs = np.log(a * recall + b) - np.log(a * recall_prev + b)
        curved = (recall - recall_prev - b / a * logs) / a
    delta = np.where(b != 0.0, curved, (recall - recall_prev) / a)
    return float(np.cumsum(delta)[-1])  # sequential, as XGBoost sums


class EarlyStopping:
    """Early stopping whose state survives across chunks (xgboost's own restarts each call).

    Parameters
    ----------
    rounds : int
        Stop after this many rounds without improvement of the validation score.
    maximize : bool, default=False
        Whether a higher score is better.
    best_score, best_iteration, since_best : optional
        State carried over from the previous chunk.
    """

    def __init__(
        self,
        rounds: int,
        maximize: bool = False,
        best_score: float | None = None,
        best_iteration: int | None = None,
        since_best: int = 0,
    ) -> None:
        self.rounds = rounds
        self.maximize = maximize
        self.best_score = best_score
        self.best_iteration = best_iteration
        self.since_best = since_best

    def update(self, score: float, iteration: int) -> bool:
        """Record round ``iteration``'s score; True when training should stop."""
        better = self.best_score is None or (
            score > self.best_score if self.maximize else score < self.best_score
        )
        if better:
            self.best_score, self.best_iteration, self.since_best = score, iteration, 0
        else:
            self.since_best += 1
        return self.since_best >= self.rounds

    def state(self) -> dict[str, Any]:
        """Keyword arguments (besides ``maximize``) that resume this in the next chunk."""
        return {
            "rounds": self.rounds,
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "since_best": self.since_best,
        }
