"""PyTorch peer of `bun run bench --peer torch`.

Reads {"quick": bool, "specs": [...], "device": "cpu" | "cuda"} (the workload descriptions of
bench/workloads.ts) on stdin, runs each workload on that device in PyTorch eager and under
torch.compile, and writes JSON to stdout: {"torch", "threads", "device", "results": {id: {...}}}.
Progress goes to stderr.

Timing: time.perf_counter around one call of the function, which returns the output tensor; on
the CPU the work is done when the call returns, on CUDA after torch.cuda.synchronize(). Two warm-up
calls first (the first call of a compiled function compiles; its time is reported as compileS),
then calls until at least MIN_SAMPLES samples and MIN_TIME seconds (or, for slow calls, at least
3 samples and LONG_TIME seconds); reported: the median.

run.ts sets OMP_WAIT_POLICY=PASSIVE unless it is set: on a machine whose cores other processes
share, OpenMP's default spinning makes calls wait for descheduled threads (medians of 8-64 ms
for sub-millisecond ops were seen with the default).
"""

import json
import math
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")

try:
    import torch
except ImportError as e:
    print(
        f"torch_peer.py: PyTorch is not installed ({e}). Install it with `python3 -m pip install torch` "
        "(CPU-only wheel: add `--index-url https://download.pytorch.org/whl/cpu`).",
        file=sys.stderr,
    )
    sys.exit(2)

MIN_SAMPLES = 12
MIN_TIME = 0.6
MAX_SAMPLES = 2000
LONG_TIME = 5.0


from torch_train_peer import build_train  # noqa: E402  (after torch's import check)


def log(*a):
    print("torch_peer:", *a, file=sys.stderr, flush=True)


DEVICE = "cpu"


def uniform(shape, seed, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(shape, generator=g) * 2 - 1) * scale).to(dtype).to(DEVICE)


def finished(fn):
    """fn, and on CUDA a wait for the work it queued."""
    if DEVICE == "cpu":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def chain(x):
    inner = x * x * x * 0.044715 + x
    return torch.tanh(inner * 0.79788456).add(1) * x


def build(spec):
    """(fn, extra) for a spec: fn() returns the output tensor; extra: more functions to time."""
    kind = spec["kind"]
    if kind.startswith("train-"):
        return build_train(spec, uniform)
    if kind == "lora":
        d, r = spec["d"], spec["rank"]
        x = uniform(spec["x"], 1)
        W = uniform([d, d], 2, 1 / math.sqrt(d))
        A = uniform([d, r], 3, 1 / math.sqrt(d))
        B = uniform([r, d], 4, 0.1)
        scale = spec["alpha"] / r
        return lambda: x @ W + ((x @ A) @ B) * scale, {}
    if kind == "rmsnorm":
        x = uniform(spec["shape"], 5, 3)
        w = uniform([spec["shape"][-1]], 6)
        return lambda: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w, {}
    if kind == "softmax":
        x = uniform(spec["shape"], 7, 4)

        def softmax():
            e = torch.exp(x - x.amax(-1, keepdim=True))
            return e / e.sum(-1, keepdim=True)

        return softmax, {}
    if kind == "chain":
        x = uniform([spec["n"]], 8, 2)
        src = uniform([spec["n"]], 99)
        dst = torch.empty_like(src)
        return lambda: chain(x), {"copy": lambda: dst.copy_(src)}
    if kind == "matmul":
        dt = torch.float16 if spec["dtype"] == "float16" else torch.float32
        n = spec["n"]
        a = uniform([n, n], 9, 1, dt)
        b = uniform([n, n], 10, 1 / math.sqrt(n), dt)
        return lambda: a @ b, {}
    if kind == "overhead":
        size, nodes = spec["size"], spec["nodes"]
        x, a, b = uniform([size], 11), uniform([size], 12, 0.5), uniform([size], 13, 0.5)

        def tiny():
            y = x
            for i in range(nodes):
                y = y + b if i % 2 else y * a
            return y

        return tiny, {}
    raise ValueError(f"unknown workload kind {kind}")


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def time_calls(fn):
    """(first call seconds, median ms, samples) after two warm-up calls."""
    fn = finished(fn)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    fn()
    samples = []
    spent = 0.0
    def enough():
        n = len(samples)
        return n >= MAX_SAMPLES or (n >= MIN_SAMPLES and spent >= MIN_TIME) or (n >= 3 and spent >= LONG_TIME)

    while not enough():
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        samples.append(dt * 1e3)
        spent += dt
    return first, median(samples), len(samples)


def main():
    global DEVICE
    job = json.load(sys.stdin)
    DEVICE = job.get("device", "cpu")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("torch_peer.py: the device is cuda, but this PyTorch sees no CUDA GPU", file=sys.stderr)
        sys.exit(2)
    results = {}
    for spec in job["specs"]:
        sid = spec["id"]
        fn, extra = build(spec)
        res = {}
        with torch.inference_mode(not getattr(fn, "needs_grad", False)):
            _, res["eagerMs"], res["eagerSamples"] = time_calls(fn)
            for name, f in extra.items():
                _, res[f"{name}Ms"], res[f"{name}Samples"] = time_calls(f)
            torch._dynamo.reset()
            try:
                compiled = fn.compiled() if hasattr(fn, "compiled") else torch.compile(fn)
                first, res["compiledMs"], res["compiledSamples"] = time_calls(compiled)
                res["compileS"] = first
                ref = fn()
                got = compiled()
                res["compiledMaxAbsDiff"] = float((got.float() - ref.float()).abs().max())
            except Exception as e:  # torch.compile needs a working C++ toolchain on the CPU
                res["compileError"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
        log(
            f"{sid}: eager {res['eagerMs']:.3f} ms, "
            + (f"compiled {res['compiledMs']:.3f} ms (compile {res['compileS']:.1f} s)" if "compiledMs" in res else f"torch.compile failed: {res['compileError']}")
        )
        results[sid] = res
    json.dump(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "ompWaitPolicy": os.environ.get("OMP_WAIT_POLICY"),
            "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
            "results": results,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
