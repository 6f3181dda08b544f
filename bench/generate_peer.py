"""transformers peer of the `generate` group of `bun run bench --peer torch` (bench/generate.ts).

Reads {"file", "prompt", "decodePrompt", "decodeTokens", "runs", "threads"} on stdin: the GGUF
file, the prompt's token ids, a short prompt's ids for decoding, how many tokens to decode, how
many timed runs, and smelt's thread count. Loads the file with transformers (gguf_file: dequantized
to float32), on the CPU with torch.set_num_threads(threads), and measures what bench/generate.ts
measures: prompt processing as one forward pass over the prompt with a fresh KV cache, the last
position's logits only as in transformers' generate (its tokens per second), and decoding as
decodeTokens greedy steps of one token with the cache, after the short prompt's forward pass
(steps per second). One warm-up run of each, then the median of runs.
Writes {"promptTps", "decodeTps", "peakMemory" (the process's peak RSS, bytes), "torch",
"transformers", "threads"} to stdout; progress to stderr.
"""

import inspect
import json
import os
import sys
import time
import warnings
from importlib.metadata import version

from peer_memory import peak_rss

warnings.filterwarnings("ignore")

try:
    import torch
    from transformers import AutoModelForCausalLM
except ImportError as e:
    print(f"generate_peer.py: needs torch, transformers and gguf ({e}); pip install them first", file=sys.stderr)
    sys.exit(2)


def main():
    job = json.load(sys.stdin)
    torch.set_num_threads(int(job["threads"]))
    path = job["file"]
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                 dtype=torch.float32).eval()
    prompt = torch.tensor([job["prompt"]])
    short = torch.tensor([job["decodePrompt"]])
    steps = int(job["decodeTokens"])
    # transformers renamed past_key_values to cache (keyword and output) in its 5.x series.
    renamed = "cache" in inspect.signature(model.forward).parameters

    # smelt's prompt pass computes the last position's logits only; transformers' generate does
    # the same through logits_to_keep (4.45 and later), so the peer asks for it where it exists.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    def forward(ids, past=None, **extra):
        kw = {} if past is None else {"cache" if renamed else "past_key_values": past}
        out = model(ids, use_cache=True, **kw, **extra)
        return out, out.cache if renamed else out.past_key_values

    def prompt_run():
        start = time.perf_counter()
        forward(prompt, **last_only)
        return prompt.shape[1] / (time.perf_counter() - start)

    def decode_run():
        out, past = forward(short)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(steps):
            out, past = forward(token, past)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        return steps / (time.perf_counter() - start)

    def median(f):
        f()
        xs = sorted(f() for _ in range(int(job["runs"])))
        return xs[len(xs) // 2]

    with torch.inference_mode():
        print("generate_peer.py: prompt processing ...", file=sys.stderr)
        prompt_tps = median(prompt_run)
        print("generate_peer.py: decoding ...", file=sys.stderr)
        decode_tps = median(decode_run)
    json.dump({
        "promptTps": prompt_tps,
        "decodeTps": decode_tps,
        "peakMemory": peak_rss(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "threads": torch.get_num_threads(),
    }, sys.stdout)


if __name__ == "__main__":
    main()
