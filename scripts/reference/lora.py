"""PEFT references for test/lora/parity.test.ts, written to test/fixtures/lora/.

  python3 scripts/reference/lora.py            # writes the fixtures
  python3 scripts/reference/lora.py check DIR  # loads a smelt-saved adapter folder in PEFT
  python3 scripts/reference/lora.py smollm2    # the same checks on SmolLM2-135M-Instruct (GGUF)

The base model is a tiny LlamaForCausalLM (transformers' config classes, seeded weights) that
test/lora/tiny-llama.ts mirrors. The adapter is made by PEFT on all linear layers and given
non-zero A and B, so the logits check exercises both factors. The training case runs AdamW on the
adapter with the same batch and loss the test uses; its losses are the reference per step.
`check DIR` reads DIR/adapter_config.json + adapter_model.safetensors with
PeftModel.from_pretrained and compares its logits with DIR/smelt-logits.json (written by the test
when SMELT_LORA_EXPORT=DIR), printing the max abs difference.
"""
import json
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures", "lora")
CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
IDS = torch.tensor([[3, 17, 42, 8, 59, 1, 23, 40, 11, 5], [60, 2, 33, 33, 14, 7, 50, 29, 0, 0]])
# The second row's last two tokens are padding: they are masked out of the loss.
MASK = torch.tensor([[1] * 10, [1] * 8 + [0] * 2])
STEPS = 6
LR = 2e-2


def base():
    torch.manual_seed(0)
    m = LlamaForCausalLM(CFG).float().eval()
    # Llama's init leaves RMSNorm weights at one: vary them so the test sees they are loaded.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return m


def loss_of(logits):
    # Next-token cross-entropy over the positions whose target is not padding, averaged.
    lg = logits[:, :-1].reshape(-1, CFG.vocab_size)
    tg = IDS[:, 1:].reshape(-1)
    keep = MASK[:, 1:].reshape(-1).bool()
    return torch.nn.functional.cross_entropy(lg[keep], tg[keep])


def adapted(m, cfg, seed, b_scale, magnitude_scale=0.0):
    """m wrapped in PEFT by cfg, with lora_B drawn from N(0, b_scale^2) (PEFT starts it at zero, which
    would hide B's layout) and, for DoRA, magnitudes scaled by 1 + N(0, magnitude_scale^2)."""
    pm = get_peft_model(m, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(b_scale * torch.randn(p.shape, generator=g))
            if magnitude_scale and "lora_magnitude_vector" in n:
                p.mul_(1 + magnitude_scale * torch.randn(p.shape, generator=g))
    return pm


def save_adapter(pm, out):
    """PEFT's adapter folder, without the model card it writes beside it."""
    pm.save_pretrained(out)
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)


def make():
    os.makedirs(OUT, exist_ok=True)
    m = base()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(OUT, "base.safetensors"))
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    pm = adapted(m, cfg, 5, 0.2)
    save_adapter(pm, os.path.join(OUT, "peft"))
    pm.eval()
    with torch.no_grad():
        logits = pm(input_ids=IDS).logits
    # The same adapter in mlx-lm's layout: lora_a [in, r], lora_b [r, out], scale = alpha / r.
    mlx = {}
    for n, p in pm.named_parameters():
        if "lora_" in n:
            path = n.replace("base_model.model.", "").replace(".default.weight", "")
            path = path.replace(".lora_A", ".lora_a").replace(".lora_B", ".lora_b")
            mlx[path] = p.detach().t().contiguous()
    os.makedirs(os.path.join(OUT, "mlx"), exist_ok=True)
    save_file(mlx, os.path.join(OUT, "mlx", "adapters.safetensors"), metadata={"format": "mlx"})
    with open(os.path.join(OUT, "mlx", "adapter_config.json"), "w") as f:
        json.dump({"fine_tune_type": "lora", "num_layers": CFG.num_hidden_layers,
                   "lora_parameters": {"rank": 4, "scale": 2.0, "dropout": 0.0}}, f, indent=2)

    losses = train(pm)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"ids": IDS.tolist(), "mask": MASK.tolist(), "lr": LR, "weightDecay": 0.01,
                   "logits": [round(v, 6) for v in logits.reshape(-1).tolist()], "logitsShape": list(logits.shape),
                   "losses": losses}, f)
    dora()


def train(pm):
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_of(pm(input_ids=IDS).logits)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def dora():
    """A DoRA adapter on q_proj, v_proj and up_proj, with non-zero B and magnitudes moved off W's
    row norms, so both the direction and the magnitude terms show in the logits."""
    m = base()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"], use_dora=True,
                     task_type="CAUSAL_LM")
    pm = adapted(m, cfg, 6, 0.2, magnitude_scale=0.2)
    out = os.path.join(OUT, "dora")
    save_adapter(pm, out)
    pm.eval()
    with torch.no_grad():
        logits = pm(input_ids=IDS).logits
    losses = train(pm)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"logits": [round(v, 6) for v in logits.reshape(-1).tolist()], "losses": losses}, f)


def check(folder):
    m = PeftModel.from_pretrained(base(), folder).eval()
    with open(os.path.join(folder, "smelt-logits.json")) as f:
        want = json.load(f)
    with torch.no_grad():
        got = m(input_ids=torch.tensor(want["ids"])).logits.reshape(-1)
    diff = (got - torch.tensor(want["logits"])).abs().max().item()
    print(json.dumps({"peft": __import__("peft").__version__, "maxAbsDiff": diff, "ok": diff <= 1e-2}))


SMOL_IDS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 2947, 314]])
SMOL_LAYERS = [28, 29]
SMOL_STEPS = 3
SMOL_LR = 1e-3
SMOL_VOCAB_SLICE = 256


def smollm2():
    """SmolLM2-135M-Instruct from the GGUF that scripts/fetch-model.sh fetches, dequantized by
    transformers (the blocks smelt reads, so both see the same float weights). The adapter covers
    q_proj, v_proj and down_proj of the last two layers (layers_to_transform), rank 4, so the
    fixture stays small and smelt's backward stays short. Full logits are 49152 wide: the fixture
    keeps the first 256 and each position's logsumexp over all of them."""
    from transformers import AutoModelForCausalLM
    folder = os.environ.get("SMELT_MODELS_DIR", os.path.expanduser("~/.cache/smelt/models"))
    m = AutoModelForCausalLM.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                     layers_to_transform=SMOL_LAYERS, task_type="CAUSAL_LM")
    pm = adapted(m, cfg, 9, 0.02)
    out = os.path.join(OUT, "smollm2")
    save_adapter(pm, out)
    pm.eval()
    with torch.no_grad():
        logits = pm(input_ids=SMOL_IDS).logits[0]
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=SMOL_LR, weight_decay=0.01)
    losses = []
    for _ in range(SMOL_STEPS):
        opt.zero_grad()
        lg = pm(input_ids=SMOL_IDS).logits
        loss = torch.nn.functional.cross_entropy(lg[0, :-1], SMOL_IDS[0, 1:])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"ids": SMOL_IDS.tolist(), "lr": SMOL_LR, "weightDecay": 0.01,
                   "logitsHead": [round(v, 5) for v in logits[:, :SMOL_VOCAB_SLICE].reshape(-1).tolist()],
                   "logsumexp": logits.logsumexp(-1).tolist(), "losses": losses}, f)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "smollm2":
        smollm2()
    else:
        make()
