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
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int32": torch.int32}


def encode_number(v, dtype):
    if dtype == "int32":
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
    values = flat.tolist() if dtype == "int32" else flat.to(torch.float32).tolist()
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


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    groups = {"activations": activations, "reductions": reductions, "softmax": softmax, "arithmetic": arithmetic, "scans": scans, "matmul": matmuls}
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
