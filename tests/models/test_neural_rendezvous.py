"""Neural fits never wait for a rank that failed: rendezvous port, setup and epoch failures.

A CI run hung for 600 s when one rank of a fit could not form the process group and the other
waited for it until the rendezvous timeout. Each test here would have waited (300 s and more)
before the fix; ``pytest.mark.timeout(120)`` turns that wait into a failure, without any time
assertion. Failures are injected in one worker process by a function run on it through the
fit's own worker group, and undone before the workers go back to the idle pool.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.models._neural_workers import small_tabular  # noqa: E402
from tests.models._neural_workers import workers_mlp as _mlp  # noqa: E402

from shardlearn.engine import engine  # noqa: E402
from shardlearn.exceptions import TaskFailed, WorkerLost  # noqa: E402
from shardlearn.models._training.fitting import prepare_training  # noqa: E402
from shardlearn.models.neural_network import _driver  # noqa: E402

MODES = [{}, {"parallelism": "pipeline", "stages": 2}]
# What a patched function of a worker process was, to put it back (per worker process).
_ORIGINALS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray]:
    return small_tabular()


def _raise_in(state: Any, rank: int, module: str, name: str) -> None:
    """On worker ``rank``: make ``module.name`` (a torch function) raise when called."""
    if state.rank != rank:
        return
    owner = {"torch": torch, "functional": torch.nn.functional}[module]
    _ORIGINALS[module + "." + name] = (owner, name, getattr(owner, name))

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"simulated failure of {name} on worker {rank}")

    setattr(owner, name, fail)


def _exit_in(state: Any, rank: int) -> None:
    """On worker ``rank``: make the process die when its setup limits torch's threads."""
    if state.rank == rank:
        torch.set_num_threads = lambda threads: os._exit(1)  # the process dies: no undo


def _heal(state: Any) -> None:
    """Undo every :func:`_raise_in` of this worker process."""
    for owner, name, original in _ORIGINALS.values():
        setattr(owner, name, original)
    _ORIGINALS.clear()


def _fit_failing(X: np.ndarray, y: np.ndarray, rank: int, where: tuple, **params: Any) -> str:
    """Fit with ``where`` failing on worker ``rank``; the fit's error message."""
    model = _mlp(**params)
    with prepare_training(model, X, y) as ctx:
        ctx.group.run(_raise_in, rank, *where)
        try:
            with pytest.raises(TaskFailed) as failed:
                model._fit_context(ctx)
        finally:
            ctx.group.run(_heal)
    return str(failed.value)


@pytest.mark.timeout(120)
def test_a_port_taken_between_choosing_and_binding_does_not_stall_the_fit(tabular, monkeypatch):
    # Before: the driver probed a free port, and rank 0 bound it later, inside
    # init_process_group; a process that took the port in between (Ray's, in the CI run) made
    # rank 0 fail and rank 1 wait for its store. Hand the old probe a port that is taken.
    X, y = tabular
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(_driver, "free_port", lambda: port, raising=False)
        with engine("local", workers=2):
            distributed = _mlp().fit(X, y)
    with engine("local", workers=1):
        single = _mlp().fit(X, y)
    assert distributed.n_iter_ == 2
    for name, weights in single.state_dict_.items():
        np.testing.assert_allclose(distributed.state_dict_[name], weights, atol=1e-5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES, ids=["data", "pipeline"])
def test_a_rank_failing_in_setup_stops_the_fit_with_its_error(tabular, mode):
    X, y = tabular
    with engine("local", workers=2):
        # Rank 0 fails before the group forms (before: before hosting the rendezvous store).
        message = _fit_failing(X, y, 0, ("torch", "set_num_threads"), **mode)
        assert message.startswith("worker 0: RuntimeError: simulated failure of set_num_threads")
        # The workers are left clean: the next fit on them trains normally.
        assert _mlp(**mode).fit(X, y).n_iter_ == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES, ids=["data", "pipeline"])
def test_a_rank_failing_in_an_epoch_stops_the_others_collectives(tabular, mode):
    X, y = tabular
    with engine("local", workers=2):
        # Rank 1 (the last pipeline stage) fails computing the loss while rank 0 waits for it
        # in an all-reduce (data) or for the gradient it sends back (pipeline). A plain MLP's
        # data-parallel step calls the loss kernels without autograd (_dense.DenseStep).
        where = ("functional", "cross_entropy") if mode else ("torch", "log_softmax")
        message = _fit_failing(X, y, 1, where, **mode)
        # The failing rank's own error, not the "connection closed" it caused on rank 0.
        assert message.startswith(f"worker 1: RuntimeError: simulated failure of {where[1]}")
        assert _mlp(**mode).fit(X, y).n_iter_ == 2


@pytest.mark.timeout(120)
def test_a_worker_lost_for_good_in_setup_does_not_leave_the_others_waiting(tabular):
    X, y = tabular
    # max_retries=0: the engine gives up on the dead worker at once, while worker 1 waits for
    # it to join; the driver closes the store, which stops worker 1, so the teardown after it
    # and the next fit on worker 1's process are not stuck behind it.
    with engine("local", workers=2, max_retries=0):
        model = _mlp()
        with prepare_training(model, X, y) as ctx:
            ctx.group.run(_exit_in, 0)
            with pytest.raises(WorkerLost):
                model._fit_context(ctx)
    with engine("local", workers=2):
        assert _mlp().fit(X, y).n_iter_ == 2
