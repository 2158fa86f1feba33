"""The trainers' Adam and SGD (neural_network/_optim.py) against torch.optim, and what a fit
imports (issue #23: torch.optim's classes import torch._dynamo, 2-4 s of a first fit)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.models._neural_workers import small_tabular, workers_mlp  # noqa: E402

from shardlearn.engine import engine  # noqa: E402
from shardlearn.models._training.fitting import prepare_training  # noqa: E402
from shardlearn.models.neural_network._ddp import GradientBuckets  # noqa: E402
from shardlearn.models.neural_network._neural import MLPClassifier  # noqa: E402
from shardlearn.models.neural_network._optim import Optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "adam": ({"lr": 0.01, "weight_decay": 0.1}, torch.optim.Adam),
    "sgd": ({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}, torch.optim.SGD),
    "sgd-plain": ({"lr": 0.1}, torch.optim.SGD),
}


def _net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _flat(net: Any, kind: str, **settings: Any) -> Optimizer:
    """The data-parallel trainer's optimiser: parameters and gradients in flat buffers."""
    buckets = GradientBuckets(torch, net, 1, torch.device("cpu"))
    optimizer = Optimizer(net.parameters(), kind, flat=(buckets.values, buckets.grads), **settings)
    optimizer.zero_grad = buckets.zero  # the gradients must stay views of the buffer
    return optimizer


def _kernel(kind: str, layout: str) -> tuple[dict, float]:
    """torch.optim's settings for the kernel ours runs, and how far apart the two may end.

    A flat Adam on CPUs is fused; the fused kernel rounds an element's update by where it
    lies in its tensor (vector body or scalar tail), so one buffer and per-parameter
    tensors differ in the last bits. Every other layout and kind is bit-equal.
    """
    return ({"fused": True}, 1e-6) if (kind, layout) == ("adam", "flat") else ({}, 0.0)


def _train(net: Any, optimizer: Any, steps: range, frozen: bool = False) -> None:
    """Seeded batches; ``frozen`` leaves the first layer without gradients (pipeline stages
    and torch skip such parameters)."""
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        X = torch.randn(16, 5, generator=generator)
        y = torch.randint(0, 3, (16,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        if frozen:
            net[0].weight.grad = net[0].bias.grad = None
        optimizer.step()


def _assert_same(a: Any, b: Any, atol: float = 0.0) -> None:
    for (name, left), right in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(left, right, rtol=0, atol=atol, msg=name)


def _assert_same_state(ours: dict, theirs: dict, atol: float = 0.0) -> None:
    assert ours["param_groups"] == theirs["param_groups"]
    assert list(ours["state"]) == list(theirs["state"])
    for index, values in theirs["state"].items():
        assert list(ours["state"][index]) == list(values)
        for key, value in values.items():
            torch.testing.assert_close(ours["state"][index][key], value, rtol=0, atol=atol)


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("layout", ["all", "frozen", "flat"])
def test_steps_and_state_are_torch_optims(name, layout):
    settings, torch_class = SETTINGS[name]
    kind = name.split("-")[0]
    ours, theirs = _net(), _net()
    if layout == "flat":
        mine = _flat(ours, kind, **settings)
    else:
        mine = Optimizer(ours.parameters(), kind, **settings)
    kernel, atol = _kernel(kind, layout)
    reference = torch_class(theirs.parameters(), **settings, **kernel)
    frozen = layout == "frozen"
    _train(ours, mine, range(5), frozen)
    _train(theirs, reference, range(5), frozen)
    _assert_same(ours, theirs, atol)
    _assert_same_state(mine.state_dict(), reference.state_dict(), atol)


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.parametrize("layout", ["all", "flat"])
def test_state_moves_both_ways_between_ours_and_torch(name, layout):
    """A checkpoint of one continues in the other as in itself (artifacts saved either way)."""
    settings, torch_class = SETTINGS[name]
    kind = name.split("-")[0]
    net = _net()
    kernel, atol = _kernel(kind, layout)
    reference = torch_class(net.parameters(), **settings, **kernel)
    _train(net, reference, range(3))
    saved_net, saved = copy.deepcopy(net.state_dict()), copy.deepcopy(reference.state_dict())
    _train(net, reference, range(3, 6))  # the reference continues itself

    ours = _net()
    # lr=123: the settings come from the state.
    mine = _flat(ours, kind, lr=123.0) if layout == "flat" else Optimizer(ours.parameters(), kind)
    ours.load_state_dict(saved_net)
    mine.load_state_dict(saved)
    _train(ours, mine, range(3, 6))
    _assert_same(ours, net, atol)

    back = _net()
    back.load_state_dict(ours.state_dict())
    again = torch_class(back.parameters(), lr=123.0)
    again.load_state_dict(mine.state_dict())
    _assert_same_state(mine.state_dict(), again.state_dict())


def test_a_flat_adam_on_cpus_is_fused_unless_its_settings_chose_a_kernel():
    """One fused kernel per step (issue #23); an explicit choice, or a loaded one, is kept."""
    fused, chosen, plain = _net(), _net(), _net()
    default = _flat(fused, "adam", lr=0.01)
    single = _flat(chosen, "adam", lr=0.01, fused=False)
    assert (default.group["fused"], single.group["fused"]) == (True, False)
    reference = torch.optim.Adam(plain.parameters(), lr=0.01)  # torch's default: not fused
    for optimizer, net in [(default, fused), (single, chosen), (reference, plain)]:
        _train(net, optimizer, range(5))
    _assert_same(chosen, plain)
    pairs = list(zip(fused.parameters(), plain.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in pairs)  # the fused kernel ran
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # last-bit rounding only
    loaded = _flat(_net(), "adam")
    loaded.load_state_dict(reference.state_dict())  # fused: None, torch's default
    assert loaded.state_dict()["param_groups"][0]["fused"] is True
    assert Optimizer(_net().parameters(), "adam").group["fused"] is None  # not flat: torch's


def test_a_state_for_other_parameters_or_settings_is_refused():
    net = _net()
    mine = Optimizer(net.parameters(), "adam", lr=0.01)
    _train(net, mine, range(1))
    state = mine.state_dict()
    with pytest.raises(ValueError, match="for 4 parameters; this network has 2"):
        Optimizer(list(net.parameters())[:2], "adam").load_state_dict(state)
    amsgrad = {**state, "param_groups": [{**state["param_groups"][0], "amsgrad": True}]}
    with pytest.raises(ValueError, match="settings this trainer does not run"):
        Optimizer(net.parameters(), "adam").load_state_dict(amsgrad)
    wrong = {**state, "state": {0: {**state["state"][0], "exp_avg": torch.zeros(2)}}}
    with pytest.raises(ValueError, match="'exp_avg' does not match"):
        Optimizer(net.parameters(), "adam").load_state_dict(wrong)
    with pytest.raises(ValueError, match="parameter 9"):
        Optimizer(net.parameters(), "adam").load_state_dict({**state, "state": {9: {}}})
    partial = {**state, "state": {0: state["state"][0]}}
    with pytest.raises(ValueError, match="differs between parameters"):
        _flat(_net(), "adam").load_state_dict(partial)
    with pytest.raises(ValueError, match="every parameter and gradient in its buffers"):
        Optimizer(net.parameters(), "adam", flat=(torch.zeros(99), torch.zeros(99)))


def _dynamo_loaded(state: Any) -> bool:
    """On a worker: whether torch._dynamo was imported."""
    return "torch._dynamo" in sys.modules


def dynamo_after_fits() -> list[bool]:
    """In a fresh interpreter: an in-process Adam fit continued by a warm start (optimiser
    state loaded), then an SGD fit on 2 worker processes; whether each imported
    torch._dynamo (the driver, then each worker)."""
    X, y = small_tabular()
    model = MLPClassifier(hidden_layer_sizes=(8,), epochs=1, batch_size=32, random_state=0,
                          verbose=False, warm_start=True, early_stopping=False)  # fmt: skip
    model.fit(X, y, engine="local")
    model.fit(X, y, engine="local")
    assert model.execution_ == "in_process" and model.n_iter_ == 2
    loaded = ["torch._dynamo" in sys.modules]
    with engine("local", workers=2):
        workers = workers_mlp(optimizer="sgd")
        with prepare_training(workers, X, y) as ctx:
            workers._fit_context(ctx)
            loaded += ctx.group.run(_dynamo_loaded)
    return loaded


def test_a_fit_does_not_import_torch_dynamo():
    code = (
        "import sys\n"
        "from tests.models.test_neural_optim import dynamo_after_fits\n"
        "print(dynamo_after_fits())\n"
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.stdout.split("\n")[-2] == "[False, False, False]"


def test_a_fit_with_the_trainers_optimisers_equals_torch_optim():
    """The whole fit, in-process, against torch.optim in the documented data order."""
    X, y = small_tabular()
    from shardlearn.models.neural_network._torch import epoch_permutation

    for optimizer, torch_class, extra in [
        ("adam", torch.optim.Adam, {}),
        ("sgd", torch.optim.SGD, {"momentum": 0.9}),
    ]:
        model = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, batch_size=32, random_state=0,
                              verbose=False, early_stopping=False, optimizer=optimizer,
                              learning_rate=0.05, **extra)  # fmt: skip
        model.fit(X, y, engine="local")
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        reference = torch_class(net.parameters(), lr=0.05, **extra)
        for epoch in range(2):
            order = epoch_permutation(0, epoch, X.shape[0])
            for start in range(0, X.shape[0], 32):
                rows = order[start : start + 32]
                reference.zero_grad()
                logits = net(torch.from_numpy(X[rows]))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[rows]))
                loss.backward()
                reference.step()
        for name, value in net.state_dict().items():
            np.testing.assert_allclose(model.state_dict_[name], value.numpy(), rtol=0, atol=1e-6)
