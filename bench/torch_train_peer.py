"""PyTorch side of the training workloads (bench/workloads-train.ts), for bench/torch_peer.py.

build_train(spec, uniform) returns (fn, extra) as torch_peer's build does. fn carries two
attributes torch_peer reads: needs_grad (run it outside inference mode) and compiled (a function
that returns the torch.compile variant: the forward compiled, its backward through AOTAutograd;
the optimizer's step compiled too where the workload is only that step).
"""

import math

import torch
import torch.nn.functional as F


def _grads(forward, inputs, ct):
    """fn() -> the first gradient of forward(*inputs) with cotangent ct, and its compiled variant."""

    def run(f):
        outs = torch.autograd.grad(f(*inputs), inputs, ct)
        return outs[0]

    return (lambda: run(forward)), (lambda: (lambda cf: (lambda: run(cf)))(torch.compile(forward)))


def _mark(fn, compiled):
    fn.needs_grad = True
    fn.compiled = compiled
    return fn


def build_train(spec, uniform):
    kind = spec["kind"]
    if kind in ("train-rmsnorm", "train-softmax"):
        shape = spec["shape"]
        if kind == "train-rmsnorm":
            x = uniform(shape, 21, 3).requires_grad_()
            w = uniform([shape[-1]], 22).requires_grad_()
            ct = uniform(shape, 23)
            fn, compiled = _grads(lambda x, w: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w, (x, w), ct)
        else:
            x = uniform(shape, 24, 4).requires_grad_()
            ct = uniform(shape, 25)
            fn, compiled = _grads(lambda x: torch.softmax(x, -1), (x,), ct)
        return _mark(fn, compiled), {}
    if kind == "train-xent":
        rows, classes = spec["rows"], spec["classes"]
        logits = uniform([rows, classes], 26, 4).requires_grad_()
        targets = torch.tensor([(i * 7919) % classes for i in range(rows)], device=logits.device)
        fn, compiled = _grads(lambda l: F.cross_entropy(l, targets), (logits,), None)
        return _mark(fn, compiled), {}
    if kind == "train-lora":
        d, r = spec["d"], spec["rank"]
        x = uniform(spec["x"], 1).requires_grad_()
        W = uniform([d, d], 2, 1 / math.sqrt(d))
        A = uniform([d, r], 3, 1 / math.sqrt(d)).requires_grad_()
        B = uniform([r, d], 4, 0.1).requires_grad_()
        ct = uniform(spec["x"], 27)
        scale = spec["alpha"] / r
        fn, compiled = _grads(lambda x, A, B: x @ W + ((x @ A) @ B) * scale, (x, A, B), ct)
        return _mark(fn, compiled), {}
    if kind == "train-mlp":
        dims, batch = spec["dims"], spec["batch"]
        x = uniform([batch, dims[0]], 30)
        y = torch.tensor([(i * 31) % dims[-1] for i in range(batch)], device=x.device)
        params = []
        for i, d in enumerate(dims[1:]):
            params.append(uniform([dims[i], d], 31 + 2 * i, 1 / math.sqrt(dims[i])).requires_grad_())
            params.append(uniform([d], 32 + 2 * i, 0.01).requires_grad_())
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)

        def loss_of(*ps):
            h = x
            for i in range(0, len(ps), 2):
                h = h @ ps[i] + ps[i + 1]
                if i + 2 < len(ps):
                    h = torch.relu(h)
            return F.cross_entropy(h, y)

        def step(f):
            gs = torch.autograd.grad(f(*params), params)
            for p, g in zip(params, gs):
                p.grad = g
            opt.step()
            return params[0]

        return _mark(lambda: step(loss_of), lambda: (lambda cf: (lambda: step(cf)))(torch.compile(loss_of))), {}
    if kind == "train-adamw":
        n, size = spec["tensors"], spec["size"]
        params = [uniform([size], 200 + i).requires_grad_() for i in range(n)]
        for i, p in enumerate(params):
            p.grad = uniform([size], 400 + i, 0.1)
        opt = torch.optim.AdamW(params, lr=1e-3, foreach=True)

        def step(f):
            f()
            return params[0]

        fn = lambda: step(opt.step)  # noqa: E731
        return _mark(fn, lambda: (lambda cs: (lambda: step(cs)))(torch.compile(opt.step))), {}
    raise ValueError(f"unknown training workload kind {kind}")
