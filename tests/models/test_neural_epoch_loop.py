"""The data-parallel epoch's fixed costs per step (issue #23), counted rather than timed.

Every rank pays them whatever its share of a step's rows, so they bound how much 2 workers can
gain over 1: the rows of consecutive steps are gathered in blocks (one ``np.take`` per block,
not per step), the epoch's step lists are built without sorting, and the loss is summed by the
loss kernel and back-propagated with the ``1 / rows`` factor (no division node). Each must give
the same batches and gradients as before.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.models._neural_workers import small_tabular  # noqa: E402

from shardlearn.engine import engine  # noqa: E402
from shardlearn.models.neural_network import _ddp  # noqa: E402
from shardlearn.models.neural_network._neural import MLPClassifier  # noqa: E402
from shardlearn.models.neural_network._torch import epoch_permutation, step_rows  # noqa: E402


def _sorted_step_rows(global_ids, perm, batch_size):
    """The definition: this rank's block positions ordered by when the epoch visits them,
    cut at multiples of ``batch_size`` visits."""
    position = np.empty(perm.shape[0], dtype=np.int64)
    position[perm] = np.arange(perm.shape[0])
    visits = position[global_ids]
    order = np.argsort(visits, kind="stable")
    cuts = np.arange(0, perm.shape[0] + batch_size, batch_size)
    return [order[(visits[order] >= a) & (visits[order] < a + batch_size)] for a in cuts[:-1]]


@pytest.mark.parametrize("n_rows", [1, 7, 240, 1000])
@pytest.mark.parametrize("batch_size", [1, 32, 333])
def test_step_rows_are_the_visit_order_of_each_ranks_rows(n_rows, batch_size, monkeypatch):
    rng = np.random.default_rng(n_rows + batch_size)
    perm = epoch_permutation(3, 1, n_rows)
    shuffled = rng.permutation(n_rows)
    owners = [np.arange(n_rows), shuffled[: n_rows // 3], np.empty(0, np.int64)]
    expected = [_sorted_step_rows(ids, perm, batch_size) for ids in owners]
    monkeypatch.setattr(np, "argsort", None)  # linear: the lists come without a sort
    for ids, want in zip(owners, expected, strict=True):
        got = step_rows(ids, perm, batch_size)
        assert len(got) == -(-n_rows // batch_size) == len(want)
        for step, (a, b) in enumerate(zip(got, want, strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"step {step}")


@pytest.mark.parametrize("weighted", [False, True])
def test_an_epochs_rows_are_gathered_in_blocks_of_steps(weighted, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6)).astype(np.float32)
    y = rng.integers(0, 3, 500)
    w = rng.random(500).astype(np.float32) if weighted else None
    steps = step_rows(np.arange(100, 600), epoch_permutation(0, 0, 700), 16)
    takes = []
    real_take = np.take
    monkeypatch.setattr(_ddp.np, "take", lambda *a, **k: takes.append(1) or real_take(*a, **k))
    # 200 rows' bytes a block: 500 rows in 3 blocks, whatever the 44 steps.
    row_bytes = 6 * 4 + 8 + (4 if weighted else 0)
    monkeypatch.setattr(_ddp, "GATHER_BYTES", 200 * row_bytes)
    batches = list(_ddp.epoch_batches(torch, (X, y, w), steps, torch.device("cpu")))
    assert len(batches) == len(steps) == 44
    assert len(takes) == 3 * (3 if weighted else 2)  # per block: X, y (and the weights)
    for (xb, yb, wb), rows in zip(batches, steps, strict=True):
        np.testing.assert_array_equal(xb.numpy(), X[rows])
        np.testing.assert_array_equal(yb.numpy(), y[rows])
        assert (wb is None) == (w is None)
        if w is not None:
            np.testing.assert_array_equal(wb.numpy(), w[rows])


@pytest.mark.parametrize("weighted", [False, True])
def test_the_summed_loss_backpropagates_the_mean_losss_gradients_bit_for_bit(weighted):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 4, generator=generator, requires_grad=True)
    y = torch.randint(0, 4, (37,), generator=generator)
    w = torch.rand(37, generator=generator) if weighted else None
    (_ddp.row_losses(torch, logits, y, w).sum() / 100).backward()
    mean_gradient, logits.grad = logits.grad.clone(), None
    _ddp.summed_loss(torch, logits, y, w).backward(torch.tensor(np.float32(1) / np.float32(100)))
    assert torch.equal(logits.grad, mean_gradient)


def test_two_workers_train_the_in_process_model_with_blocks_of_one_step(monkeypatch):
    X, y = small_tabular()
    monkeypatch.setattr(_ddp, "GATHER_BYTES", 1)  # every block holds one step (in-process)
    params = dict(hidden_layer_sizes=(8, 8), batch_size=32, epochs=2, random_state=3)
    params |= dict(early_stopping=False, verbose=False)
    with engine("local", workers=2):
        here = MLPClassifier(**params, execution="in_process").fit(X, y)
        there = MLPClassifier(**params, execution="workers").fit(X, y)
    assert (here.execution_, there.execution_) == ("in_process", "workers")
    for name, value in here.state_dict_.items():
        np.testing.assert_allclose(there.state_dict_[name], value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(there.loss_curve_, here.loss_curve_, rtol=1e-5)
