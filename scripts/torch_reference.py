#!/usr/bin/env python3
"""Reference outputs from PyTorch (CPU) for test/tensor/torch-reference.test.ts.

Run from the repository root with torch installed (`pip install torch numpy`):

    python3 scripts/torch_reference.py

It writes test/fixtures/torch/*.json. Inputs are generated here from fixed seeds and stored
beside the outputs, so the test needs nothing but the JSON. Every number is written as the
shortest decimal that reads back as the same value in its dtype (float16 and bfloat16 values
are exact float32 values); NaN and infinities are the strings "nan", "inf", "-inf".
"""
import json
import math
import os
import sys

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "torch")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int32": torch.int32, "bool": torch.bool}


def encode_number(v, dtype):
    if dtype in ("int32", "bool"):
        return int(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if dtype == "float16":
        return float(str(np.float16(v)))
    # float32 and bfloat16 (whose values are float32 values): shortest float32 repr.
    return float(str(np.float32(v)))


def encode(t):
    dtype = {v: k for k, v in DTYPES.items()}[t.dtype]
    flat = t.detach().reshape(-1)
    values = flat.tolist() if dtype in ("int32", "bool") else flat.to(torch.float32).tolist()
    return {"shape": list(t.shape), "dtype": dtype, "data": [encode_number(v, dtype) for v in values]}


def randn(shape, seed, dtype="float32", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(DTYPES[dtype])


def uniform(shape, seed, lo, hi, dtype="float32"):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)).to(DTYPES[dtype])


def case(name, op, inputs, output, **params):
    return {"name": name, "op": op, "params": params, "inputs": [encode(x) for x in inputs], "output": encode(output)}


def activations():
    cases = []
    specials = torch.tensor([0.0, -0.0, 1e-6, -1e-6, 3.0, -3.0, 8.0, -8.0, 30.0, -30.0, float("nan"), float("inf")])
    for dtype in ["float32", "float16", "bfloat16"]:
        x = torch.cat([randn([40], 1, dtype, 3.0), specials.to(DTYPES[dtype])])
        cases.append(case(f"gelu {dtype}", "gelu", [x], torch.nn.functional.gelu(x)))
        cases.append(case(f"gelu tanh {dtype}", "geluTanh", [x], torch.nn.functional.gelu(x, approximate="tanh")))
        cases.append(case(f"silu {dtype}", "silu", [x], torch.nn.functional.silu(x)))
        cases.append(case(f"softplus {dtype}", "softplus", [x], torch.nn.functional.softplus(x)))
    x = torch.cat([randn([40], 2, "float32", 1.5), specials])
    cases.append(case("erf float32", "erf", [x], torch.erf(x)))
    cases.append(case("sigmoid float32", "sigmoid", [x], torch.sigmoid(x)))
    cases.append(case("expm1 float32", "expm1", [x], torch.expm1(x)))
    y = torch.cat([uniform([40], 3, -0.999, 0.999), torch.tensor([0.0, 0.5, -0.9999, 0.99999, 1.0, -1.0, 1.5, float("nan")])])
    cases.append(case("erfinv float32", "erfinv", [y], torch.erfinv(y)))
    z = torch.cat([uniform([40], 4, -0.99, 5.0), torch.tensor([1e-7, -1e-7, -1.0, 0.0])])
    cases.append(case("log1p float32", "log1p", [z], torch.log1p(z)))
    for dtype in ["float16", "bfloat16"]:
        x = randn([40], 5, dtype, 2.0)
        cases.append(case(f"erf {dtype}", "erf", [x], torch.erf(x)))
    return cases


def reductions():
    cases = []
    x = randn([4, 5, 6], 10, "float32")
    for dims in [[-1], [0], [0, 2]]:
        cases.append(case(f"logsumexp {dims}", "logsumexp", [x], torch.logsumexp(x, dim=dims), axis=dims))
        for ddof in [0, 1]:
            cases.append(case(f"var {dims} ddof={ddof}", "variance", [x], torch.var(x, dim=dims, correction=ddof), axis=dims, ddof=ddof))
            cases.append(case(f"std {dims} ddof={ddof}", "std", [x], torch.std(x, dim=dims, correction=ddof), axis=dims, ddof=ddof))
    masked = x.clone()
    masked[0, 0, :] = float("-inf")
    masked[1, 2, 3] = float("-inf")
    masked[2, 1, :] = 1000.0
    cases.append(case("logsumexp with -inf and large rows", "logsumexp", [masked], torch.logsumexp(masked, dim=[-1]), axis=[-1]))
    for dtype in ["float16", "bfloat16"]:
        h = randn([6, 20], 11, dtype)
        cases.append(case(f"logsumexp {dtype}", "logsumexp", [h], torch.logsumexp(h, dim=[-1]), axis=[-1]))
        cases.append(case(f"var {dtype} ddof=1", "variance", [h], torch.var(h, dim=[-1], correction=1), axis=[-1], ddof=1))
        cases.append(case(f"mean {dtype}", "mean", [h], torch.mean(h, dim=[0]), axis=[0]))
    return cases


def softmax():
    cases = []
    x = randn([5, 7, 9], 20, "float32", 3.0)
    x[0, 0, :4] = float("-inf")
    x[1, 1, 0] = 200.0
    for dim in [-1, 0, 1]:
        cases.append(case(f"softmax dim={dim}", "softmax", [x], torch.softmax(x, dim=dim), axis=dim))
        cases.append(case(f"log_softmax dim={dim}", "logSoftmax", [x], torch.log_softmax(x, dim=dim), axis=dim))
    for dtype in ["float16", "bfloat16"]:
        h = randn([6, 16], 21, dtype, 2.0)
        cases.append(case(f"softmax {dtype}", "softmax", [h], torch.softmax(h, dim=-1), axis=-1))
        cases.append(case(f"log_softmax {dtype}", "logSoftmax", [h], torch.log_softmax(h, dim=-1), axis=-1))
    return cases


def arithmetic():
    cases = []
    a = torch.cat([uniform([30], 30, -20, 20), torch.tensor([7.0, -7.0, 7.0, -7.0, 1.0, -1.0, 0.0, -0.0, 5.5, -5.5, 1e6, -3.0])])
    b = torch.cat([uniform([30], 31, -5, 5), torch.tensor([2.0, 2.0, -2.0, -2.0, 0.1, 0.1, 3.0, 3.0, -2.5, 2.5, 3.0, float("inf")])])
    b[b.abs() < 0.05] = 0.5
    cases.append(case("floor_divide float32", "floorDivide", [a, b], torch.floor_divide(a, b)))
    cases.append(case("remainder float32", "remainder", [a, b], torch.remainder(a, b)))
    ai = torch.tensor([7, -7, 7, -7, 0, 13, -13, 100, -100, 1, -1, 5], dtype=torch.int32)
    bi = torch.tensor([2, 2, -2, -2, 3, 5, 5, -7, -7, 3, 3, -5], dtype=torch.int32)
    cases.append(case("floor_divide int32", "floorDivide", [ai, bi], torch.floor_divide(ai, bi)))
    cases.append(case("remainder int32", "remainder", [ai, bi], torch.remainder(ai, bi)))
    base = torch.tensor([-2.0, -2.0, -2.0, -3.0, -0.5, -1.0, -1.0, -2.0, 2.0, 0.0, 0.0, -1.5, 1.7, 4.0, -8.0, 9.0])
    expo = torch.tensor([2.0, 3.0, -1.0, 0.0, -3.0, 1e6, 1e6 + 1, 0.5, -0.5, 0.0, -1.0, 4.0, 2.3, 0.5, 1 / 3, -0.5])
    cases.append(case("pow with negative bases", "power", [base, expo], torch.pow(base, expo)))
    pa, pb = uniform([30], 32, 0.1, 5.0), uniform([30], 33, -3, 3)
    cases.append(case("pow float32", "power", [pa, pb], torch.pow(pa, pb)))
    return cases


def scans():
    cases = []
    x = randn([4, 6, 5], 40, "float32")
    p = uniform([4, 6, 5], 41, 0.7, 1.4)
    for dim in [0, 1, -1]:
        cases.append(case(f"cumsum dim={dim}", "cumsum", [x], torch.cumsum(x, dim=dim), axis=dim))
        cases.append(case(f"cumprod dim={dim}", "cumprod", [p], torch.cumprod(p, dim=dim), axis=dim))
    i = torch.tensor([3, -1, 4, 1, -5, 9, 2, -6], dtype=torch.int32)
    cases.append(case("cumsum int32", "cumsum", [i], torch.cumsum(i, dim=0, dtype=torch.int32), axis=0))
    cases.append(case("cumprod int32", "cumprod", [i], torch.cumprod(i, dim=0, dtype=torch.int32), axis=0))
    return cases


def matmuls():
    cases = []
    a, b = randn([3, 7, 13], 50), randn([3, 13, 5], 51)
    cases.append(case("matmul batched", "matmul", [a, b], torch.matmul(a, b)))
    a, b = randn([2, 1, 4, 40], 52), randn([3, 40, 6], 53)
    cases.append(case("matmul broadcast batch", "matmul", [a, b], torch.matmul(a, b)))
    a, b = randn([9, 17], 54), randn([17], 55)
    cases.append(case("matmul matrix-vector", "matmul", [a, b], torch.matmul(a, b)))
    for dtype in ["float16", "bfloat16"]:
        a, b = randn([2, 6, 24], 56, dtype), randn([2, 24, 5], 57, dtype)
        cases.append(case(f"matmul {dtype}", "matmul", [a, b], torch.matmul(a, b)))
    return cases


def ordering():
    """sort/argsort/topk (stable, NaN last), triangles, flips and rolls; indices as int32."""
    cases = []
    x = torch.round(randn([4, 9], 60, "float32", 2.0) * 2) / 2  # halves: many ties
    x[1, 3] = float("nan")
    x[2, 0] = float("nan")
    x[3, 5] = -0.0
    for dim in [-1, 0]:
        cases.append(case(f"sort dim={dim}", "sort", [x], torch.sort(x, dim=dim, stable=True).values, axis=dim))
        idx = torch.sort(x, dim=dim, stable=True).indices.to(torch.int32)
        cases.append(case(f"argsort dim={dim}", "argsort", [x], idx, axis=dim))
    i = torch.tensor([[5, -3, 5, 0, 7, -3, 2, 2]], dtype=torch.int32)
    cases.append(case("sort int32", "sort", [i], torch.sort(i, dim=-1, stable=True).values, axis=-1))
    cases.append(case("argsort int32", "argsort", [i], torch.sort(i, dim=-1, stable=True).indices.to(torch.int32), axis=-1))
    h = randn([3, 40], 61, "bfloat16")
    cases.append(case("sort bfloat16", "sort", [h], torch.sort(h, dim=-1, stable=True).values, axis=-1))
    y = randn([3, 50], 62, "float32")  # no ties: PyTorch leaves the order of equal values open
    for k in [1, 5, 50]:
        cases.append(case(f"topk k={k}", "topk", [y], torch.topk(y, k, dim=-1, largest=True, sorted=True).values, k=k, axis=-1))
    cases.append(case("topk dim=0", "topk", [y], torch.topk(y, 2, dim=0, largest=True, sorted=True).values, k=2, axis=0))
    m = randn([2, 4, 5], 63, "float32")
    for k in [-1, 0, 2]:
        cases.append(case(f"tril k={k}", "tril", [m], torch.tril(m, diagonal=k), k=k))
        cases.append(case(f"triu k={k}", "triu", [m], torch.triu(m, diagonal=k), k=k))
    for dims in [[0], [1, 2], [0, 1, 2]]:
        cases.append(case(f"flip {dims}", "flip", [m], torch.flip(m, dims=dims), axis=dims))
    cases.append(case("roll 3 dim 2", "roll", [m], torch.roll(m, 3, 2), shift=3, axis=2))
    cases.append(case("roll [1, -2] dims [0, 1]", "roll", [m], torch.roll(m, (1, -2), (0, 1)), shift=[1, -2], axis=[0, 1]))
    cases.append(case("roll flattened 7", "roll", [m], torch.roll(m, 7), shift=7))
    return cases


def elementwise_extra():
    cases = []
    p = torch.cat([uniform([30], 70, 1e-3, 1e4), torch.tensor([1.0, 10.0, 1000.0, 0.0, float("inf"), -1.0, float("nan")])])
    cases.append(case("log10 float32", "log10", [p], torch.log10(p)))
    r = torch.cat([randn([30], 71, "float32", 3.0), torch.tensor([0.0, -0.0, float("inf"), 1e-30])])
    cases.append(case("reciprocal float32", "reciprocal", [r], torch.reciprocal(r)))
    a = torch.tensor([1.0, 1.0, 1.0, 0.0, 1e-9, float("inf"), float("inf"), float("nan"), float("nan"), 100.0, 100.0, -1.0])
    b = torch.tensor([1.0, 1.00002, 1.000005, 1e-9, 0.0, float("inf"), -float("inf"), float("nan"), 1.0, 100.0009, 100.002, 1.0])
    cases.append(case("isclose", "isclose", [a, b], torch.isclose(a, b)))
    cases.append(case("isclose equal_nan", "isclose", [a, b], torch.isclose(a, b, equal_nan=True), equalNan=True))
    cases.append(case("isclose rtol=1e-3 atol=0.1", "isclose", [a, b], torch.isclose(a, b, rtol=1e-3, atol=0.1), rtol=1e-3, atol=0.1))
    return cases


def contractions():
    cases = []
    specs = [
        ("ij,jk->ik", [[3, 5], [5, 4]]),
        ("bij,bjk->bik", [[2, 3, 5], [2, 5, 4]]),
        ("i,j->ij", [[4], [3]]),
        ("ij->ji", [[3, 4]]),
        ("ijk->j", [[2, 3, 4]]),
        ("ij,ij->i", [[3, 6], [3, 6]]),
        ("bhqd,bhkd->bhqk", [[2, 2, 3, 8], [2, 2, 5, 8]]),
        ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 5]]),
        ("ab,cb", [[3, 4], [2, 4]]),
    ]
    for n, (spec, shapes) in enumerate(specs):
        xs = [randn(s, 80 + 10 * n + k) for k, s in enumerate(shapes)]
        cases.append(case(f"einsum {spec}", "einsum", xs, torch.einsum(spec, *xs), subscripts=spec))
    a, b = randn([3, 4, 5], 120), randn([4, 5, 2], 121)
    cases.append(case("tensordot axes=2", "tensordot", [a, b], torch.tensordot(a, b, dims=2), axes=2))
    a, b = randn([4, 3, 5], 122), randn([3, 4, 6], 123)
    cases.append(case("tensordot axes=[[0, 1], [1, 0]]", "tensordot", [a, b], torch.tensordot(a, b, dims=([0, 1], [1, 0])), axes=[[0, 1], [1, 0]]))
    return cases


def convolutions():
    """Inputs and outputs in MLX's channels-last layout; PyTorch computes on permuted copies."""
    cases = []
    for n, (shape, wshape, stride, padding, dilation, groups) in enumerate([
        ([2, 11, 3], [4, 3, 3], 1, 0, 1, 1),
        ([1, 12, 4], [6, 3, 2], 2, 1, 1, 2),
        ([2, 10, 2], [3, 2, 2], 1, 2, 3, 1),
    ]):
        x, w = randn(shape, 130 + n), randn(wshape, 140 + n)
        y = torch.nn.functional.conv1d(x.permute(0, 2, 1), w.permute(0, 2, 1), stride=stride, padding=padding, dilation=dilation, groups=groups)
        cases.append(case(f"conv1d {wshape} s={stride} p={padding} d={dilation} g={groups}", "conv1d", [x, w], y.permute(0, 2, 1),
                          stride=stride, padding=padding, dilation=dilation, groups=groups))
    for n, (shape, wshape, stride, padding, dilation, groups) in enumerate([
        ([2, 7, 6, 3], [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1),
        ([1, 8, 9, 4], [4, 3, 2, 2], [2, 1], [1, 2], [1, 1], 2),
        ([1, 9, 9, 2], [2, 3, 3, 2], [1, 2], [2, 1], [2, 1], 1),
    ]):
        x, w = randn(shape, 150 + n), randn(wshape, 160 + n)
        y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), stride=stride, padding=padding, dilation=dilation, groups=groups)
        cases.append(case(f"conv2d {wshape} s={stride} p={padding} d={dilation} g={groups}", "conv2d", [x, w], y.permute(0, 2, 3, 1),
                          stride=stride, padding=padding, dilation=dilation, groups=groups))
    return cases


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    groups = {"activations": activations, "reductions": reductions, "softmax": softmax, "arithmetic": arithmetic, "scans": scans, "matmul": matmuls,
              "ordering": ordering, "elementwise-extra": elementwise_extra, "contractions": contractions, "convolutions": convolutions}
    total = 0
    for name, make in groups.items():
        body = {"torch": torch.__version__, "cases": make()}
        path = os.path.join(OUT, f"{name}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.write("\n")
        os.replace(tmp, path)
        size = os.path.getsize(path)
        total += size
        print(f"{path}: {len(body['cases'])} cases, {size} bytes")
    print(f"total {total} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
