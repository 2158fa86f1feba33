"""A plain MLP's training step without autograd: the kernels autograd would run, called directly.

Why. Every rank of data-parallel training pays a fixed cost per optimiser step whatever its
share of the rows, and that cost bounds what 2 workers gain over 1 (issue #23). For issue #23's
(64, 64) MLP most of it was autograd's bookkeeping, not arithmetic: building the graph
(about 30 nodes), ``nn.Module`` calls, and accumulating every gradient into the flat buffer
(``AccumulateGrad``): a one-row step took 0.29-0.37 ms on one core with autograd, 0.19-0.21
ms without (shared machine; the forward and backward alone 0.17-0.27 and 0.07). A network that
is only ``Linear`` layers and elementwise activations has a backward pass short enough to write
out, so :class:`DenseStep` runs the forward pass, the summed cross-entropy and the backward
pass as a straight list of kernel calls, then copies each weight's and bias's gradient into
its slot of the flat gradient buffer (not ``out=`` there: a BLAS product's rounding depends on
where its output lies, and autograd computes its products into fresh tensors).

Same numbers. Each call is the kernel autograd's derivative formulas run for that node, with
the same operands in the same layout (torch 2.13's ``derivatives.yaml`` and
``FunctionsManual.cpp``): ``linear`` is ``addmm(bias, x, weight.t())``, whose weight gradient
is ``grad.t().mm(x)`` (``mm_mat2_backward`` on a transposed ``mat2``), input gradient
``grad.mm(weight)`` and bias gradient ``grad.sum(0)``; ReLU's backward is ``threshold_backward``
of its output, tanh's ``tanh_backward``, the logistic's ``sigmoid_backward`` (of the outputs),
GELU's ``gelu_backward`` of its input; the loss is ``log_softmax`` + ``nll_loss`` and its
backward ``nll_loss_backward`` + ``_log_softmax_backward_data``; a sample weight multiplies the
per-row gradient as ``MulBackward0`` does. Tested bit-equal to autograd's gradients.

Any other network (dropout, input scaling, convolutions) keeps autograd: :meth:`DenseStep.build`
returns None for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DenseStep"]

# nll_loss's reduction codes (at::Reduction): per row, or summed.
_NONE, _SUM = 0, 2
# ignore_index of torch.nn.functional.cross_entropy (no label is ignored here).
_IGNORE = -100


class DenseStep:
    """Forward, summed cross-entropy and backward of an MLP, gradients into their ``.grad``.

    Build it with :meth:`build`; every parameter's ``.grad`` must already be a tensor (a view
    of the flat gradient buffer), which each :meth:`__call__` overwrites.
    """

    def __init__(self, torch: Any, layers: list[tuple[Any, Any, str | None]]) -> None:
        self.torch = torch
        aten = torch.ops.aten
        self.nll_forward = aten.nll_loss_forward.default
        self.nll_backward = aten.nll_loss_backward.default
        self.softmax_backward = aten._log_softmax_backward_data.default
        self.forward_fn = {
            "relu": torch.relu,
            "tanh": torch.tanh,
            "logistic": torch.sigmoid,
            "gelu": torch.nn.functional.gelu,
        }
        self.backward_fn = {
            "relu": lambda grad, _x, out: aten.threshold_backward.default(grad, out, 0),
            "tanh": lambda grad, _x, out: aten.tanh_backward.default(grad, out),
            "logistic": lambda grad, _x, out: aten.sigmoid_backward.default(grad, out),
            "gelu": lambda grad, x, _out: aten.gelu_backward.default(grad, x),
        }
        # (weight, bias, activation after it or None) with plain tensors: no autograd.
        self.layers = [(w.detach(), b.detach(), w.grad, b.grad, act) for w, b, act in layers]

    @classmethod
    def build(cls, torch: Any, net: Any) -> DenseStep | None:
        """A step for ``net`` when it is ``Linear`` layers each followed by at most one
        ReLU, Tanh, Sigmoid or exact GELU (every parameter trained, with a gradient
        tensor); None for any other network."""
        nn = torch.nn
        kinds = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "logistic", nn.GELU: "gelu"}
        modules = list(net) if isinstance(net, nn.Sequential) else []
        layers: list[tuple[Any, Any, str | None]] = []
        for module in modules:
            if type(module) is nn.Linear and module.bias is not None:
                layers.append((module.weight, module.bias, None))
            elif type(module) in kinds and layers and layers[-1][2] is None:
                if type(module) is nn.GELU and module.approximate != "none":
                    return None
                layers[-1] = (*layers[-1][:2], kinds[type(module)])
            else:
                return None
        params = [tensor for weight, bias, _ in layers for tensor in (weight, bias)]
        if not layers or any(not p.requires_grad or p.grad is None for p in params):
            return None
        return cls(torch, layers)

    def __call__(self, x: Any, y: Any, weight: Any, scale: Any) -> Any:
        """Write the gradients of ``scale * sum(row losses)`` (each row's cross-entropy,
        times its ``weight`` when there is one) into the ``.grad`` tensors; return the
        summed loss (before ``scale``)."""
        torch = self.torch
        inputs, before, after = [], [], []  # per layer: its input, pre- and post-activation
        for w, b, _, _, act in self.layers:
            inputs.append(x)
            before.append(torch.addmm(b, x, w.t()))
            x = before[-1] if act is None else self.forward_fn[act](before[-1])
            after.append(x)
        logp = torch.log_softmax(x, 1)
        if weight is None:
            loss, total = self.nll_forward(logp, y, None, _SUM, _IGNORE)
            grad = self.nll_backward(scale, logp, y, None, _SUM, _IGNORE, total)
        else:
            losses, total = self.nll_forward(logp, y, None, _NONE, _IGNORE)
            loss = (losses * weight).sum()
            grad = self.nll_backward(scale.expand(y.shape) * weight, logp, y, None, _NONE,
                                     _IGNORE, total)  # fmt: skip
        grad = self.softmax_backward(grad, logp, 1, logp.dtype)
        for index in range(len(self.layers) - 1, -1, -1):
            w, _, w_grad, b_grad, act = self.layers[index]
            if act is not None:
                grad = self.backward_fn[act](grad, before[index], after[index])
            # Computed, then copied: BLAS's rounding depends on where the output lies.
            w_grad.copy_(grad.t().mm(inputs[index]))
            b_grad.copy_(grad.sum(0))
            if index:
                grad = grad.mm(w)
        return loss
