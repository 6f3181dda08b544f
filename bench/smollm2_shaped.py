"""Writes a model folder with SmolLM2-135M-Instruct's architecture and seeded random weights, for
the `lora-train` benchmark on machines that cannot fetch the real model (the GPU machine reaches no
registry, and the GGUF is larger than what can be carried there). The training step's cost depends
on the shapes, not on the values, so smelt (SMELT_LORA_MODEL=DIR) and the PEFT peer time the same
work as with the real model, both in float32.

  python3 bench/smollm2_shaped.py DIR

DIR gets config.json, model.safetensors (float32, ~540 MB) and a one-token tokenizer.json (the
benchmark feeds token ids, never text).
"""

import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main(out):
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, hidden_act="silu")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0}, "unk_token": "<unk>"},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python3 bench/smollm2_shaped.py DIR", file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
