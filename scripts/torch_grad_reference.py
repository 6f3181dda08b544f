"""Reference gradients from PyTorch autograd for smelt's gradient rules (issue 12).

Writes test/fixtures/torch/grads.json: for each case its float inputs (values as float32), its
integer inputs, a cotangent w of the output's shape, and the gradient of sum(f(inputs) * w) with
respect to every float input. test/autograd/torch-grads.test.ts builds the same f from smelt ops.
Run: python3 scripts/torch_grad_reference.py
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "torch", "grads.json")
GEN = torch.Generator().manual_seed(12)
CASES = []


def rand(*shape, lo=-2.0, hi=2.0):
    return (torch.rand(*shape, generator=GEN, dtype=torch.float64) * (hi - lo) + lo).to(torch.float32)


def case(name, f, floats, ints=None):
    ints = ints or {}
    leaves = {k: v.clone().requires_grad_(True) for k, v in floats.items()}
    out = f(**leaves, **ints)
    w = torch.randn(out.shape, generator=GEN, dtype=torch.float64).to(torch.float32)
    (out * w).sum().backward()
    CASES.append({
        "name": name,
        "floats": {k: {"shape": list(v.shape), "data": v.flatten().tolist()} for k, v in floats.items()},
        "ints": {k: {"shape": list(v.shape), "data": v.flatten().tolist()} for k, v in ints.items()},
        "w": {"shape": list(out.shape), "data": w.flatten().tolist()},
        "grads": {k: leaves[k].grad.flatten().tolist() for k in floats},
    })


def rms_norm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


case("matmul", lambda a, b: a @ b, {"a": rand(3, 4), "b": rand(4, 5)})
case("matmulBatchedBroadcast", lambda a, b: a @ b, {"a": rand(2, 1, 3, 4), "b": rand(3, 4, 2)})
case("matmulVector", lambda a, b: a @ b, {"a": rand(4), "b": rand(2, 4, 3)})
case("matmulTransposed", lambda a, b: a.T @ b.T, {"a": rand(4, 3), "b": rand(5, 4)})
case("softmax", lambda x: torch.softmax(x, -1), {"x": rand(3, 7, lo=-4, hi=4)})
case("softmaxAxis0", lambda x: torch.softmax(x, 0), {"x": rand(4, 3, lo=-4, hi=4)})
case("logSoftmax", lambda x: torch.log_softmax(x, -1), {"x": rand(3, 7, lo=-4, hi=4)})
case("logsumexp", lambda x: torch.logsumexp(x, 1), {"x": rand(2, 5, 3, lo=-4, hi=4)})
case("crossEntropy", lambda x, labels: F.cross_entropy(x, labels), {"x": rand(4, 9, lo=-3, hi=3)}, {"labels": torch.tensor([3, 0, 8, 3])})
case("rmsNorm", rms_norm, {"x": rand(3, 8), "w": rand(8)})
case("layerNorm", lambda x, w, b: F.layer_norm(x, (8,), w, b, 1e-5), {"x": rand(3, 8), "w": rand(8), "b": rand(8)})
case("gelu", lambda x: F.gelu(x), {"x": rand(2, 6, lo=-4, hi=4)})
case("geluTanh", lambda x: F.gelu(x, approximate="tanh"), {"x": rand(2, 6, lo=-4, hi=4)})
case("silu", lambda x: F.silu(x), {"x": rand(2, 6, lo=-6, hi=6)})
case("softplus", lambda x: F.softplus(x), {"x": rand(2, 6, lo=-6, hi=6)})
case("maxTies", lambda x: x.amax(1), {"x": torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [-1.0, 0.0, -2.0, 0.0]])})
case("minTiesAll", lambda x: x.amin(), {"x": torch.tensor([[1.0, -3.0, 2.0], [-3.0, 4.0, -3.0]])})
case("maximumTies", lambda a, b: torch.maximum(a, b), {"a": torch.tensor([1.0, 2.0, 3.0, -1.0]), "b": torch.tensor([1.0, 0.0, 3.0, 2.0])})
case("cumsum", lambda x: torch.cumsum(x, 1), {"x": rand(3, 5)})
case("cumprod", lambda x: torch.cumprod(x, 1), {"x": rand(3, 5, lo=0.5, hi=1.5)})
case("cumprodZeros", lambda x: torch.cumprod(x, 1), {"x": torch.tensor([[0.5, 0.0, 2.0, 0.0, 1.5], [1.2, -1.0, 0.7, 2.0, 0.0], [0.0, 3.0, 0.9, 1.1, 0.8]])})
case("prodZeros", lambda x: torch.prod(x, 1), {"x": torch.tensor([[0.5, 0.0, 2.0], [0.0, 0.0, 1.0], [1.5, 2.0, -1.0]])})
case("take", lambda x, ids: torch.index_select(x, 1, ids), {"x": rand(3, 5)}, {"ids": torch.tensor([4, 0, 4, 2, 4])})
case("embedding", lambda w, ids: w[ids], {"w": rand(6, 4)}, {"ids": torch.tensor([[1, 5, 1], [0, 1, 5]])})
case("takeAlongAxis", lambda x, ids: torch.gather(x, 1, ids), {"x": rand(3, 4)}, {"ids": torch.tensor([[0, 0, 3], [2, 1, 2], [3, 3, 3]])})
case("concatenate", lambda a, b: torch.cat([a, b, a], 0), {"a": rand(2, 3), "b": rand(1, 3)})
case("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=3.0), {"x": rand(2, 3)})
case("variance", lambda x: torch.var(x, 1, correction=0), {"x": rand(3, 6)})
case("std", lambda x: torch.std(x, -1, correction=1), {"x": rand(3, 6)})
case("sdpaCausal", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), {"q": rand(1, 2, 4, 3), "k": rand(1, 2, 4, 3), "v": rand(1, 2, 4, 3)})
case("sdpaMaskGrouped", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True),
     {"q": rand(1, 4, 3, 2), "k": rand(1, 2, 5, 2), "v": rand(1, 2, 5, 2), "m": rand(3, 5)})
case("powerDivide", lambda a, b: torch.pow(a, b) / (b + 3), {"a": rand(2, 3, lo=0.5, hi=2), "b": rand(2, 3)})
case("sigmoidTanh", lambda x: torch.sigmoid(x) * torch.tanh(x), {"x": rand(2, 5)})
case("mlp", lambda x, w1, w2: (torch.relu(x @ w1) @ w2).square().mean(), {"x": rand(4, 3), "w1": rand(3, 5), "w2": rand(5, 2)})
case("scatterAdd", lambda x, v, ids: x.scatter_add(1, ids, v), {"x": rand(3, 4), "v": rand(3, 5)},
     {"ids": torch.tensor([[0, 3, 0, 0, 1], [2, 2, 2, 2, 2], [1, 0, 3, 1, 0]])})
case("scatterAddAxis0", lambda x, v, ids: x.scatter_add(0, ids, v), {"x": rand(2, 3), "v": rand(4, 3)},
     {"ids": torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]])})

with open(OUT, "w") as f:
    json.dump({"torch": torch.__version__, "cases": CASES}, f, separators=(",", ":"))
print(f"{len(CASES)} cases -> {os.path.normpath(OUT)}")
