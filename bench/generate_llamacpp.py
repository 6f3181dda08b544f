"""llama.cpp peer of the `generate` group of `bun run bench --peer torch` (bench/generate.ts), run
when llama-cpp-python is installed (`pip install llama-cpp-python`, which builds llama.cpp).

Reads the same job as bench/generate_peer.py on stdin ({"file", "prompt", "decodePrompt",
"decodeTokens", "runs", "threads"}) and measures the same things on the GGUF file as it is (its
Q4_1 weights kept quantized, as smelt keeps them), with smelt's thread count: prompt processing
as one evaluation of the prompt's ids from an empty context, computing the last position's
logits only, and decoding as decodeTokens greedy steps of one token after the short prompt's
evaluation. One warm-up run of each, then the median of runs.
Writes {"promptTps", "decodeTps", "peakMemory" (the process's peak RSS, bytes), "llamaCpp",
"threads"} to stdout; progress to stderr.
"""

import json
import sys
import time
from importlib.metadata import version

from peer_memory import peak_rss

try:
    import numpy as np
    from llama_cpp import Llama
except ImportError as e:
    print(f"generate_llamacpp.py: needs llama-cpp-python and numpy ({e})", file=sys.stderr)
    sys.exit(2)


def main():
    job = json.load(sys.stdin)
    threads = int(job["threads"])
    prompt = [int(t) for t in job["prompt"]]
    short = [int(t) for t in job["decodePrompt"]]
    steps = int(job["decodeTokens"])
    llm = Llama(model_path=job["file"], n_ctx=max(len(prompt), len(short) + steps) + 8, n_batch=len(prompt),
                n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)

    def last_logits():
        return llm.scores[llm.n_tokens - 1]

    def prompt_run():
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        last_logits()
        return len(prompt) / (time.perf_counter() - start)

    def decode_run():
        llm.reset()
        llm.eval(short)
        token = int(np.argmax(last_logits()))
        start = time.perf_counter()
        for _ in range(steps):
            llm.eval([token])
            token = int(np.argmax(last_logits()))
        return steps / (time.perf_counter() - start)

    def median(f):
        f()
        xs = sorted(f() for _ in range(int(job["runs"])))
        return xs[len(xs) // 2]

    print("generate_llamacpp.py: prompt processing ...", file=sys.stderr)
    prompt_tps = median(prompt_run)
    print("generate_llamacpp.py: decoding ...", file=sys.stderr)
    decode_tps = median(decode_run)
    json.dump({
        "promptTps": prompt_tps,
        "decodeTps": decode_tps,
        "peakMemory": peak_rss(),
        "llamaCpp": version("llama-cpp-python"),
        "threads": threads,
    }, sys.stdout)


if __name__ == "__main__":
    main()
