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

Data-parallel training keeps every parameter and gradient in one flat buffer each
(:class:`~shardlearn.models.neural_network._ddp.GradientBuckets`); the optimiser then updates the
buffers with one call of each kernel instead of one per parameter (``flat``): per step, 10-odd
tensor operations instead of 60 for a three-layer network, the same numbers (elementwise
updates, one step count). On CPUs a flat Adam runs torch's fused kernel (one pass over the
buffer; ``fused=True`` unless the settings chose a kernel): its updates round in the last bit
as torch.optim's ``fused=True`` ones do, by where an element lies in its tensor, so they
match ``torch.optim.Adam`` to float32 rounding (1e-6 over a fit), not bit for bit.
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
    flat : (Tensor, Tensor), optional
        ``(values, grads)``: two 1-D buffers such that every parameter is a view of ``values``
        and its ``.grad`` the view at the same offset of ``grads`` (as
        :class:`~shardlearn.models.neural_network._ddp.GradientBuckets` lays them out). A step
        then updates the whole buffer with one call of each kernel instead of one per
        parameter; the result is the same, since every update is elementwise and every
        parameter has the same step count. ``state_dict`` still holds one entry per parameter.
    **settings
        Param-group settings (``lr``, ``weight_decay``, SGD's ``momentum``...), as the
        ``torch.optim`` class takes them.
    """

    def __init__(self, params: Any, kind: str, flat: tuple | None = None, **settings: Any) -> None:
        self.torch = require_torch()
        self.kind = kind
        self.params = list(params)
        self.group = {**_DEFAULTS[kind], **settings}
        # By position in ``params``, as torch packs it; with ``flat``, one entry, "flat".
        self.state: dict[Any, dict[str, Any]] = {}
        self.flat = flat
        self.offsets = [] if flat is None else [_offset(p, *flat) for p in self.params]
        self._fuse()

    def _fuse(self) -> None:
        """Flat Adam on CPUs runs torch's fused kernel (``fused=True``) unless the settings
        chose a kernel: one pass over the buffer instead of about ten tensor operations, 30-40
        us less of every step's fixed cost (issue #23). The fused kernel's arithmetic rounds
        a few updates differently in the last bit (torch.optim's own ``fused=True`` steps
        are bit-equal to it); the state keeps ``fused: True``, so a checkpoint resumes the same.
        """
        group = self.group
        cpu = self.flat is not None and self.flat[0].device.type == "cpu"
        if self.kind == "adam" and cpu and group["fused"] is None and not group["foreach"]:
            group["fused"] = True

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

    def _targets(self) -> list[tuple[Any, Any, dict]]:
        """``(tensor, its gradient, its state)`` for the kernels: the flat buffers, or every
        parameter that has a gradient (torch skips the others)."""
        if self.flat is not None:
            return [(*self.flat, self.state.setdefault("flat", {}))]
        return [
            (param, param.grad, self.state.setdefault(index, {}))
            for index, param in enumerate(self.params)
            if param.grad is not None
        ]

    def _adam(self) -> None:
        torch, group = self.torch, self.group
        targets = self._targets()
        for tensor, _, state in targets:
            if not state:  # lazy, as torch: the step on the CPU, the moments like the tensor
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype(torch), device="cpu")
                state["exp_avg"] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
        params = [tensor for tensor, _, _ in targets]
        beta1, beta2 = group["betas"]
        from torch.optim.adam import adam  # the module, not torch.optim's attribute (deleted)

        adam(
            params,
            [grad for _, grad, _ in targets],
            [state["exp_avg"] for _, _, state in targets],
            [state["exp_avg_sq"] for _, _, state in targets],
            [],
            [state["step"] for _, _, state in targets],
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
        targets = self._targets()
        momentum = group["momentum"] != 0
        buffers = [state.get("momentum_buffer") for _, _, state in targets]
        from torch.optim.sgd import sgd

        sgd(
            [tensor for tensor, _, _ in targets],
            [grad for _, grad, _ in targets],
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
            for (_, _, state), buffer in zip(targets, buffers, strict=True):
                state["momentum_buffer"] = buffer

    def state_dict(self) -> dict[str, Any]:
        """The state in ``torch.optim.Optimizer.state_dict``'s format (tensors not copied,
        except each parameter's own copy of a flat optimiser's step count)."""
        group = {**self.group, "params": list(range(len(self.params)))}
        if self.flat is None:
            state = {index: values for index, values in self.state.items() if values}
            return {"state": state, "param_groups": [group]}
        flat = self.state.get("flat") or {}
        per_param = {}
        if flat:
            for index, (param, start) in enumerate(zip(self.params, self.offsets, strict=True)):
                per_param[index] = {
                    key: value.clone() if key == "step" else _view(value, start, param)
                    for key, value in flat.items()
                }
        return {"state": per_param, "param_groups": [group]}

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
        state: dict[Any, dict[str, Any]] = {}
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
        self._fuse()
        self.state = state if self.flat is None else self._flattened(state, self.flat[0])

    def _flattened(self, state: dict[int, dict[str, Any]], buffer: Any) -> dict[str, dict]:
        """Per-parameter state as the flat buffers' state; it must be one state for all."""
        if not state:
            return {}
        keys = {frozenset(values) for values in state.values()}
        steps = {float(values["step"]) for values in state.values() if "step" in values}
        if len(state) != len(self.params) or len(keys) != 1 or len(steps) > 1:
            raise ValueError(
                "The optimiser state differs between parameters (step counts, or some without "
                "state); this trainer steps every parameter together."
            )
        flat: dict[str, Any] = {}
        for key in next(iter(keys)):
            if key == "step":
                flat[key] = state[0][key].clone()
                continue
            flat[key] = self.torch.empty_like(buffer)
            for index, (param, start) in enumerate(zip(self.params, self.offsets, strict=True)):
                _view(flat[key], start, param).copy_(state[index][key])
        return {"flat": flat}


def _offset(param: Any, values: Any, grads: Any) -> int:
    """Where ``param`` lies in the flat ``values`` (its gradient at the same place of
    ``grads``); ValueError when it is not laid out so."""
    start = param.storage_offset() - values.storage_offset()
    inside = (
        param.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()
        and param.is_contiguous()
        and 0 <= start <= values.numel() - param.numel()
        and param.grad is not None
        and param.grad.untyped_storage().data_ptr() == grads.untyped_storage().data_ptr()
        and param.grad.storage_offset() - grads.storage_offset() == start
    )
    if not inside:
        raise ValueError("A flat optimiser needs every parameter and gradient in its buffers.")
    return start


def _view(buffer: Any, start: int, param: Any) -> Any:
    """The part of a flat ``buffer`` that belongs to ``param``, shaped like it."""
    return buffer[start : start + param.numel()].view_as(param)


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
