"""Adam and SGD for the trainers: torch's own update kernels, without importing torch._dynamo.

``torch.optim``'s optimiser classes import ``torch._dynamo`` (with sympy and the rest of the
compiler stack: 2-4 s on a shared 2-core machine) the first time one is built, stepped or
checkpointed: ``add_param_group``, ``state_dict``, ``load_state_dict`` and ``zero_grad`` are
wrapped by ``torch._disable_dynamo`` and every ``step`` by ``_use_grad_for_differentiable``, which
import it lazily so that ``torch.compile`` can trace around them. Training here is never
compiled, so in a fresh worker those wrappers cost a first fit seconds and do nothing else
(issue #23).

:class:`Optimizer` calls the functional kernels the classes call -- ``torch.optim.adam.adam`` and
``torch.optim.sgd.sgd``, public API -- with the arguments and the state the classes pass, under
``torch.no_grad()`` as they step, so every update is torch's own arithmetic (bit-equal to
``torch.optim.Adam`` / ``SGD``; foreach on GPUs, the single-tensor loop on CPUs, as torch picks).
:meth:`Optimizer.state_dict` and :meth:`Optimizer.load_state_dict` use ``torch.optim``'s format, so
checkpoints and warm-start artifacts move between the two unchanged.
"""

from __future__ import annotations

from typing import Any

from shardlearn.models.neural_network._torch import require_torch

__all__ = ["Optimizer"]

# The param-group settings of torch.optim.Adam / SGD (torch 2.13) as this module runs them: no
# amsgrad, maximize, nesterov, dampening, capturable, differentiable; torch picks foreach/fused.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "adam": {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": False,
    },
    "sgd": {
        "lr": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
    },
}
# Settings a loaded state may not change: this module runs only the defaults above for them.
_FIXED = {
    "adam": ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay"),
    "sgd": ("dampening", "nesterov", "maximize", "differentiable"),
}


class Optimizer:
    """Adam (``kind="adam"``) or SGD (``"sgd"``) over ``params``, as ``torch.optim`` steps them.

    Parameters
    ----------
    params : iterable of Tensor
        The parameters, in the order ``state_dict`` numbers them.
    kind : {"adam", "sgd"}
    **settings
        Param-group settings (``lr``, ``weight_decay``, SGD's ``momentum``...), as the
        ``torch.optim`` class takes them.
    """

    def __init__(self, params: Any, kind: str, **settings: Any) -> None:
        self.torch = require_torch()
        self.kind = kind
        self.params = list(params)
        self.group = {**_DEFAULTS[kind], **settings}
        self.state: dict[int, dict[str, Any]] = {}  # by position in ``params``, as torch packs

    def zero_grad(self) -> None:
        """Drop every gradient (``torch.optim``'s ``zero_grad(set_to_none=True)``)."""
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        """One update of the parameters that have a gradient."""
        with self.torch.no_grad():
            if self.kind == "adam":
                self._adam()
            else:
                self._sgd()

    def _adam(self) -> None:
        torch, group = self.torch, self.group
        params, grads, avgs, squares, steps = [], [], [], [], []
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            state = self.state.get(index)
            if state is None:  # lazy, as torch: step on the CPU, moments like the parameter
                state = self.state[index] = {
                    "step": torch.tensor(0.0, dtype=_scalar_dtype(torch), device="cpu"),
                    "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                }
            params.append(param)
            grads.append(param.grad)
            avgs.append(state["exp_avg"])
            squares.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        from torch.optim.adam import adam  # the module, not torch.optim's attribute (deleted)

        adam(
            params,
            grads,
            avgs,
            squares,
            [],
            steps,
            foreach=group["foreach"],
            capturable=False,
            differentiable=False,
            fused=group["fused"],
            has_complex=any(torch.is_complex(p) for p in params),
            decoupled_weight_decay=False,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )

    def _sgd(self) -> None:
        group = self.group
        with_grad = [i for i, param in enumerate(self.params) if param.grad is not None]
        momentum = group["momentum"] != 0
        buffers = [self.state.get(i, {}).get("momentum_buffer") for i in with_grad]
        from torch.optim.sgd import sgd

        sgd(
            [self.params[i] for i in with_grad],
            [self.params[i].grad for i in with_grad],
            buffers if momentum else [],
            has_sparse_grad=False,
            foreach=group["foreach"],
            fused=group["fused"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        if momentum:  # the kernel filled the list: a first step creates the buffers
            for index, buffer in zip(with_grad, buffers, strict=True):
                self.state[index] = {"momentum_buffer": buffer}

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim.Optimizer.state_dict``'s format (tensors not copied)."""
        group = {**self.group, "params": list(range(len(self.params)))}
        return {"state": dict(self.state), "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state of :meth:`state_dict`'s format (also a ``torch.optim`` one's).

        As torch does, the group's settings come from ``state_dict`` and its tensors move to
        the parameters' device (and floating dtype; Adam's ``step`` stays where it is). A
        state for other parameters or settings this module does not run is a ValueError.
        """
        torch = self.torch
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1:
            raise ValueError("The optimiser state must have exactly one parameter group.")
        saved = groups[0]
        if len(saved.get("params", ())) != len(self.params):
            raise ValueError(
                f"The optimiser state is for {len(saved.get('params', ()))} parameters; this "
                f"network has {len(self.params)}."
            )
        fixed = [key for key in _FIXED[self.kind] if saved.get(key, False)]
        if set(saved) - {"params"} - set(_DEFAULTS[self.kind]) or fixed:
            raise ValueError(
                f"The optimiser state has {self.kind} settings this trainer does not run."
            )
        state: dict[int, dict[str, Any]] = {}
        for index, values in state_dict.get("state", {}).items():
            if not isinstance(index, int) or not 0 <= index < len(self.params):
                raise ValueError(
                    f"The optimiser state names a parameter {index!r} it does not have."
                )
            state[index] = {
                key: _placed(torch, key, value, self.params[index]) for key, value in values.items()
            }
        self.group = {**_DEFAULTS[self.kind], **{k: v for k, v in saved.items() if k != "params"}}
        if "betas" in self.group:
            self.group["betas"] = tuple(self.group["betas"])
        self.state = state


def _scalar_dtype(torch: Any) -> Any:
    """The dtype of Adam's ``step`` (torch.optim's ``_get_scalar_dtype``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _placed(torch: Any, key: str, value: Any, param: Any) -> Any:
    """A loaded state value where ``torch.optim`` would put it (and shape-checked)."""
    if key == "step":  # on the CPU, never capturable here; torch turns a number into a tensor
        if torch.is_tensor(value):
            return value
        return torch.tensor(float(value), dtype=_scalar_dtype(torch))
    if not torch.is_tensor(value) or value.shape != param.shape:
        raise ValueError(f"The optimiser state's {key!r} does not match its parameter's shape.")
    if param.is_floating_point():
        return value.to(dtype=param.dtype, device=param.device)
    return value.to(device=param.device)
