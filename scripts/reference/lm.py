"""Reference outputs of transformers for the language-model tests, written to test/fixtures/lm/.

- smollm2.json: SmolLM2-135M-Instruct.Q4_1.gguf loaded by transformers (from_pretrained with
  gguf_file: dequantized to float32) on a few prompts: per position the argmax and the first
  logits of the row, the last position's top 50, and 24 greedy tokens generated with the KV cache.
  Needs the model in the cache (scripts/fetch-model.sh); skipped with a note when it is missing.
- tiny-qwen2/, tiny-llama/: tiny random models made with transformers' config classes, saved as
  Hugging Face folders (Qwen2 tied, in bfloat16; Llama untied, with llama3 rope scaling, in
  float16 shards), each with a
  tiny byte-level BPE tokenizer.json trained here and reference.json: the logits of a few id
  sequences (per position the argmax and leading logits, and the last position's whole row).
- tiny-llama.gguf, tiny-llama-q8_0.gguf: the same Llama as llama.cpp would write it (tiny_gguf).

Run from the repository root: python3 scripts/reference/lm.py
"""
import json
import os
import shutil
from importlib.metadata import version

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

OUT = "test/fixtures/lm"
NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR = os.environ.get("SMELT_MODELS_DIR", os.path.expanduser("~/.cache/smelt/models"))
VERSIONS = {k: version(k) for k in ("torch", "transformers", "gguf", "tokenizers")}
torch.manual_seed(14)
os.makedirs(OUT, exist_ok=True)

ROW = 16  # leading logits kept per position
TOP = 50


def rounded(xs):
    return [float(f"{x:.6g}") for x in xs]


def logits_record(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    top = torch.topk(logits[-1], TOP)
    return {
        "ids": ids,
        "argmax": logits.argmax(-1).tolist(),
        "rows": [rounded(r[:ROW].tolist()) for r in logits],
        "topIds": top.indices.tolist(),
        "topValues": rounded(top.values.tolist()),
    }


def smollm2():
    if not os.path.exists(os.path.join(DIR, NAME)):
        print(f"skipping smollm2.json: {NAME} is not in {DIR} (run scripts/fetch-model.sh)")
        return
    tok = AutoTokenizer.from_pretrained(DIR, gguf_file=NAME)
    model = AutoModelForCausalLM.from_pretrained(DIR, gguf_file=NAME, dtype=torch.float32).eval()
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    prompts = ["The capital of France is", "def fibonacci(n):\n", chat]
    records = []
    for p in prompts:
        ids = tok(p)["input_ids"]
        r = logits_record(model, ids)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, use_cache=True,
                                 min_new_tokens=24, pad_token_id=tok.eos_token_id)
        r["prompt"] = p
        r["greedy"] = out[0, len(ids):].tolist()
        records.append(r)
        print(repr(p), "->", repr(tok.decode(r["greedy"])))
    with open(f"{OUT}/smollm2.json", "w") as f:
        json.dump({"versions": VERSIONS, "model": NAME, "prompts": records}, f)


def tiny_tokenizer(folder):
    """A byte-level BPE of 300 tokens trained on a few sentences, saved with transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = ["the quick brown fox jumps over the lazy dog", "hello world, hello smelt", "tiny models for tests"] * 20
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def tiny(name, model, dtype, shard=None):
    """Saved in a half dtype (small files; the loader's conversion tested too); the reference runs
    in float32 on the same rounded weights."""
    folder = f"{OUT}/{name}"
    shutil.rmtree(folder, ignore_errors=True)
    model = model.to(dtype).eval()
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, **kwargs)
    # Reloaded rather than cast back: the cast would leave the rotary frequencies (a buffer) rounded too.
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = tiny_tokenizer(folder)
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (1, 5, 9)]
    seqs.append(tok("hello world, the quick brown fox")["input_ids"])
    with open(f"{folder}/reference.json", "w") as f:
        json.dump({"versions": VERSIONS, "sequences": [last_row(model, s) for s in seqs]}, f)


def last_row(model, ids):
    r = logits_record(model, ids)
    with torch.no_grad():
        r["last"] = rounded(model(torch.tensor([ids])).logits[0, -1].tolist())
    del r["topIds"], r["topValues"]
    return r


def tiny_models():
    # Random weights of the usual scale: transformers initialises norms to one and projections with std 0.02,
    # which makes near-constant logits; a wider std exercises every path.
    def randomize(m):
        with torch.no_grad():
            for n, p in m.named_parameters():
                p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in n else 0.2 * torch.randn_like(p))
        return m

    qwen = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    tiny("tiny-qwen2", randomize(Qwen2ForCausalLM(qwen)), torch.bfloat16)
    llama = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})
    model = randomize(LlamaForCausalLM(llama))
    tiny("tiny-llama", model, torch.float16, shard="40KB")
    rounded_model = model.to(torch.float16).to(torch.float32)
    tiny_gguf(rounded_model, llama, "tiny-llama.gguf", None)
    tiny_gguf(rounded_model, llama, "tiny-llama-q8_0.gguf", "Q8_0")


def permute(w, heads):
    """llama.cpp's reordering of q/k rows (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_gguf(model, cfg, name, quant):
    """The tiny Llama's (float16-rounded) weights as llama.cpp lays them out (q/k rows permuted,
    llama3 scaling as rope_freqs): matrices as F16, so the logits of tiny-llama/reference.json
    hold for it too, or quantized to Q8_0 (for quantized-against-dequantized checks)."""
    import gguf
    import numpy as np
    from gguf.quants import quantize

    def matrix(t):
        if quant is None:
            return t.astype(np.float16), None
        return quantize(t.astype(np.float32), gguf.GGMLQuantizationType[quant]), gguf.GGMLQuantizationType[quant]

    w = gguf.GGUFWriter(f"{OUT}/{name}", arch="llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tj = json.load(open(f"{OUT}/tiny-llama/tokenizer.json"))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i == 0 else 1 for i in range(len(vocab))])
    w.add_token_merges([" ".join(m) for m in tj["model"]["merges"]])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    # llama3 scaling: per-pair divisors of the plain frequencies.
    plain = 1.0 / (10000.0 ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
    rs = cfg.rope_parameters
    low, high = rs["original_max_position_embeddings"] / rs["low_freq_factor"], rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    factors = []
    for f in plain.tolist():
        wl = 2 * np.pi / f
        if wl < high:
            factors.append(1.0)
        elif wl > low:
            factors.append(rs["factor"])
        else:
            smooth = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / (rs["high_freq_factor"] - rs["low_freq_factor"])
            factors.append(1.0 / ((1 - smooth) / rs["factor"] + smooth))
    w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for gg, hf in (("token_embd.weight", "model.embed_tokens.weight"), ("output.weight", "lm_head.weight")):
        data, qt = matrix(sd[hf])
        w.add_tensor(gg, data, raw_dtype=qt)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"].astype(np.float32))
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                t = permute(t, cfg.num_attention_heads)
            elif hf == "self_attn.k_proj":
                t = permute(t, cfg.num_key_value_heads)
            data, qt = (t.astype(np.float32), None) if "norm" in hf else matrix(t)
            w.add_tensor(f"blk.{i}.{gg}.weight", data, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


tiny_models()
smollm2()
