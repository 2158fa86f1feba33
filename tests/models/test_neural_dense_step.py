"""A plain MLP's training step without autograd (neural_network/_dense.py, issue #23).

The step calls the kernels autograd's derivative formulas call, so its loss and gradients must
equal autograd's bit for bit, and a fit through it must equal a fit through autograd exactly;
networks it does not cover (dropout, input scaling, convolutions) keep autograd.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.models._neural_workers import small_tabular  # noqa: E402

from shardlearn.engine import engine  # noqa: E402
from shardlearn.models.neural_network import _ddp  # noqa: E402
from shardlearn.models.neural_network._dense import DenseStep  # noqa: E402
from shardlearn.models.neural_network._neural import MLPClassifier  # noqa: E402
from shardlearn.models.neural_network._torch import build_network  # noqa: E402


def _arch(activation: str, dropout: float = 0.0, **extra) -> dict:
    return {"kind": "mlp", "n_features": 7, "hidden": [16, 9], "activation": activation,
            "dropout": dropout, "n_classes": 3, **extra}  # fmt: skip


CONVNET = {"kind": "convnet", "image_shape": [1, 4, 4], "channels": [2], "kernel_size": 3,
           "pool": False, "hidden": [4], "activation": "relu", "dropout": 0.0,
           "n_classes": 3}  # fmt: skip


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "gelu"])
@pytest.mark.parametrize("rows", [0, 1, 37])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients_are_autograds_bit_for_bit(activation, rows, weighted):
    generator = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 7, generator=generator)
    y = torch.randint(0, 3, (rows,), generator=generator)
    w = torch.rand(rows, generator=generator) if weighted else None
    scale = torch.tensor(np.float32(1) / np.float32(64))
    reference, net = build_network(_arch(activation), 3), build_network(_arch(activation), 3)
    expected = _ddp.summed_loss(torch, reference(x), y, w)
    expected.backward(scale)
    for param in net.parameters():  # stale values: the step must overwrite every gradient
        param.grad = torch.full_like(param, 7.0)
    step = DenseStep.build(torch, net)
    assert step is not None
    assert torch.equal(step(x, y, w, scale), expected.detach())
    for (name, want), got in zip(reference.named_parameters(), net.parameters(), strict=True):
        assert torch.equal(got.grad, want.grad), name
        assert rows == 0 or bool(got.grad.abs().sum() > 0), name  # the gradients are not zero


def test_networks_it_does_not_cover_keep_autograd():
    def with_grads(net):
        for param in net.parameters():
            param.grad = torch.zeros_like(param)
        return net

    assert DenseStep.build(torch, with_grads(build_network(_arch("relu"), 0))) is not None
    assert DenseStep.build(torch, build_network(_arch("relu"), 0)) is None  # no .grad tensors
    uncovered = [
        build_network(_arch("relu", dropout=0.2), 0),
        build_network(_arch("relu", input_scale=0.5), 0),
        build_network(CONVNET, 0),
        torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.GELU(approximate="tanh")),
        torch.nn.Sequential(torch.nn.Linear(7, 4), torch.nn.ReLU(), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Linear(7, 4, bias=False)),
    ]
    for net in uncovered:
        assert DenseStep.build(torch, with_grads(net)) is None, net


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_fit_through_the_dense_step_equals_autograds(activation, weighted, monkeypatch):
    X, y = small_tabular()
    weight = np.random.default_rng(0).random(X.shape[0]) if weighted else None
    params = dict(hidden_layer_sizes=(8, 8), batch_size=32, epochs=2, random_state=3,
                  activation=activation, early_stopping=False, verbose=False,
                  execution="in_process")  # fmt: skip
    calls = []
    real_call = DenseStep.__call__
    monkeypatch.setattr(DenseStep, "__call__", lambda *a: calls.append(1) or real_call(*a))
    with engine("local", workers=1):
        dense = MLPClassifier(**params).fit(X, y, sample_weight=weight)
        assert len(calls) == 2 * 7  # every step of both epochs (200 rows, batches of 32)
        monkeypatch.setattr(DenseStep, "build", classmethod(lambda cls, torch, net: None))
        autograd = MLPClassifier(**params).fit(X, y, sample_weight=weight)
    assert len(calls) == 2 * 7
    assert dense.loss_curve_ == autograd.loss_curve_
    for name, value in autograd.state_dict_.items():
        np.testing.assert_array_equal(dense.state_dict_[name], value, err_msg=name)
    assert dense.loss_curve_[1] < dense.loss_curve_[0]  # it trained
