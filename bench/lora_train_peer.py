"""PEFT + torch peer of the `lora-train` group of `bun run bench --peer torch` (bench/lora-train.ts).

Reads {"file", "ids", "rank", "runs", "minMs", "maxRuns", "threads", "compile", "device"} on stdin: the GGUF file (or a
Hugging Face folder), the batch's token ids ([B, T + 1]: inputs are the first T, targets the last T), the LoRA rank, the
fewest timed steps, the least time they take together and the most steps, smelt's thread count, whether to time torch.compile too, and "cpu" or "cuda". Loads the model with
transformers (dequantized to float32) on that device, wraps every linear layer but lm_head in PEFT
LoRA (alpha 16), and times one training step (forward, mean next-token cross-entropy, backward,
torch.optim.AdamW) after one warm-up step, as the median of the runs. Writes {"eager", "compile",
"torch", "peft", "threads"} to stdout, each mode as {"msPerStep", "tokensPerSec", "peakMemory", "runs"}
(on the CPU the peak RSS of the process so far, on the GPU the peak of torch's CUDA allocator, in
bytes); progress to stderr.
"""

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
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging
except ImportError as e:
    print(f"lora_train_peer.py: needs torch, transformers, peft and gguf ({e}); pip install them first", file=sys.stderr)
    sys.exit(2)


def main():
    job = json.load(sys.stdin)
    # The GGUF conversion's progress bar would flood bench's output.
    hf_logging.disable_progress_bar()
    torch.set_num_threads(int(job["threads"]))
    path = job["file"]
    device = job.get("device", "cpu")
    if os.path.isdir(path):
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    else:
        base = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    base = base.to(device)
    model = get_peft_model(base, LoraConfig(r=int(job["rank"]), lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    ids = torch.tensor(job["ids"], device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def peak():
        if device == "cuda":
            return torch.cuda.max_memory_allocated()
        return peak_rss()
    x, y = ids[:, :-1], ids[:, 1:]
    tokens = x.numel()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def loss_of(m):
        logits = m(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def timed(m):
        def step():
            opt.zero_grad()
            loss_of(m).backward()
            opt.step()
        step()
        sync()
        ms = []
        while len(ms) < int(job["maxRuns"]) and (len(ms) < int(job["runs"]) or sum(ms) < float(job["minMs"])):
            t0 = time.perf_counter()
            step()
            sync()
            ms.append((time.perf_counter() - t0) * 1000)
        med = sorted(ms)[len(ms) // 2]
        return {"msPerStep": med, "tokensPerSec": tokens * 1000 / med, "peakMemory": peak(), "runs": len(ms)}

    print("lora_train_peer.py: eager ...", file=sys.stderr)
    eager = timed(model)
    compiled = {"error": "not run (--quick)"}
    if job.get("compile"):
        print("lora_train_peer.py: torch.compile ...", file=sys.stderr)
        try:
            compiled = timed(torch.compile(model))
        except Exception as e:  # a compile failure is a result to report, not a crash of the bench
            compiled = {"error": f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    json.dump({"eager": eager, "compile": compiled, "torch": torch.__version__, "peft": version("peft"), "threads": torch.get_num_threads(),
               "device": device}, sys.stdout)


if __name__ == "__main__":
    main()
