"""Reference outputs from PyTorch for smelt's fused kernels (issue: row fusion, matmul, sm.fast).

Writes test/fixtures/torch/fused.json: for each case how its inputs are made (the integer
generator below, which test/tensor/torch-fused.test.ts repeats exactly), the parameters, and
PyTorch's output (every element, or every k-th of large outputs, with their indices).
Run: python3 scripts/torch_fused_reference.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "torch", "fused.json")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


SEEDS = iter(range(1, 10_000))
MADE = {}  # tensor id -> how it was made


def gen(n, seed, scale):
    """n values in [-scale, scale]: an LCG's integers mapped to multiples of scale/1000."""
    out, s = [], seed
    for _ in range(n):
        s = (s * 1103515245 + 12345) % 2147483648
        out.append(((s >> 8) % 2001 - 1000) / 1000 * scale)
    return out


def rnd(shape, dtype, scale=1.0):
    seed = next(SEEDS)
    n = math.prod(shape)
    t = torch.tensor(gen(n, seed, scale), dtype=torch.float64).reshape(shape).to(torch.float32).to(DTYPES[dtype])
    MADE[id(t)] = {"shape": list(shape), "seed": seed, "scale": scale, "dtype": dtype}
    return t


def case(name, dtype, inputs, output, **params):
    flat = output.detach().to(torch.float64).reshape(-1)
    step = max(1, flat.numel() // 2000)
    idx = range(0, flat.numel(), step)
    return {
        "name": name,
        "dtype": dtype,
        "inputs": {k: MADE[id(v)] if id(v) in MADE else {"shape": list(v.shape), "values": v.reshape(-1).tolist()} for k, v in inputs.items()},
        "params": params,
        # 9 significant digits hold a float32 exactly
        "output": {"shape": list(output.shape), "dtype": str(output.dtype).replace("torch.", ""), "step": step,
                   "data": [float(f"{float(flat[i]):.9g}") for i in idx]},
    }


def rope_ref(x, dims, traditional, base, scale, offset):
    # computed in float64 from x's values, as smelt computes in float32 and rounds at the end
    xd = x.to(torch.float64)
    L = x.shape[-2]
    pos = (offset + torch.arange(L, dtype=torch.float64)) * scale
    freq = base ** (-2 * torch.arange(dims // 2, dtype=torch.float64) / dims)
    ang = pos[:, None] * freq[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    out = xd.clone()
    if traditional:
        a, b = xd[..., 0:dims:2], xd[..., 1:dims:2]
        out[..., 0:dims:2] = a * cos - b * sin
        out[..., 1:dims:2] = a * sin + b * cos
    else:
        h = dims // 2
        a, b = xd[..., :h], xd[..., h:dims]
        out[..., :h] = a * cos - b * sin
        out[..., h:dims] = a * sin + b * cos
    return out.to(x.dtype)


cases = []
for dtype in ["float32", "float16", "bfloat16"]:
    x = rnd([3, 5, 67], dtype, 3)
    w = rnd([67], dtype)
    b = rnd([67], dtype)
    cases.append(case("softmax", dtype, {"x": x}, torch.softmax(x.float(), -1).to(x.dtype)))
    cases.append(case("logsumexp", dtype, {"x": x}, torch.logsumexp(x.float(), -1).to(x.dtype)))
    cases.append(case("rmsNorm", dtype, {"x": x, "w": w}, F.rms_norm(x.float(), [67], w.float(), eps=1e-5).to(x.dtype)))
    cases.append(case("layerNorm", dtype, {"x": x, "w": w, "b": b}, F.layer_norm(x.float(), [67], w.float(), b.float(), eps=1e-5).to(x.dtype)))
    a = rnd([2, 37, 45], dtype)
    m = rnd([45, 29], dtype, 0.3)
    bias = rnd([29], dtype)
    cases.append(case("matmulBiasGelu", dtype, {"a": a, "m": m, "bias": bias}, F.gelu(a.float() @ m.float() + bias.float()).to(a.dtype)))
    xr = rnd([2, 3, 7, 16], dtype)
    for trad in [False, True]:
        cases.append(case("rope", dtype, {"x": xr}, rope_ref(xr, 16, trad, 10000.0, 0.5, 5), dims=16, traditional=trad, base=10000.0, scale=0.5, offset=5))

for dtype in ["float32", "float16", "bfloat16"]:
    logits = rnd([9, 37], dtype, 2)
    targets = torch.tensor([3, 0, 36, -100, 5, 5, 17, -100, 1])
    t32 = targets.to(torch.int32)
    lf = logits.float()
    cases.append(case("crossEntropy", dtype, {"logits": logits, "targets": t32},
                      F.cross_entropy(lf, targets.long(), ignore_index=-100, reduction="none").to(logits.dtype), ignore=-100))
    cases.append(case("crossEntropyMean", dtype, {"logits": logits, "targets": t32},
                      F.cross_entropy(lf, targets.long(), ignore_index=-100).to(logits.dtype), ignore=-100))

    for causal, gqa in [(True, True), (False, False)]:
        q = rnd([1, 4, 5, 16], dtype)
        k = rnd([1, 2 if gqa else 4, 7, 16], dtype)
        v = rnd([1, 2 if gqa else 4, 7, 16], dtype)
        L, S = 5, 7
        # PyTorch's is_causal aligns the mask to the top left; smelt (and MLX) align it to the
        # bottom right when there are more keys than queries, so the mask is spelled out.
        mask = torch.full((L, S), float("-inf")).triu(S - L + 1) if causal else rnd([L, S], dtype)
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float(), scale=0.3, enable_gqa=gqa).to(q.dtype)
        inputs = {"q": q, "k": k, "v": v}
        if not causal:
            inputs["mask"] = mask
        cases.append(case("sdpa", dtype, inputs, out, causal=causal, scale=0.3))

    x = rnd([4, 16, 512], dtype)
    W = rnd([512, 512], dtype, 0.05)
    A = rnd([512, 8], dtype, 0.05)
    B = rnd([8, 512], dtype, 0.05)
    lora = (x.float() @ W.float() + (16 / 8) * ((x.float() @ A.float()) @ B.float())).to(x.dtype)
    cases.append(case("lora", dtype, {"x": x, "W": W, "A": A, "B": B}, lora, alpha=16, rank=8))

os.makedirs(os.path.dirname(OUT), exist_ok=True)
tmp = OUT + ".tmp"
with open(tmp, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
os.replace(tmp, OUT)
print(f"wrote {len(cases)} cases to {os.path.relpath(OUT)} ({os.path.getsize(OUT) // 1024} KiB), torch {torch.__version__}")
