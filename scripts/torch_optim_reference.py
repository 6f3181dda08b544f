"""100-step optimizer trajectories from torch.optim, for test/optim/torch-optim.test.ts.

  python3 scripts/torch_optim_reference.py > test/fixtures/optim/trajectories.json

Each case starts from the same W [3, 2] and b [2] and records, per step, the raw gradients (of a
small regression loss, before any clipping) and the parameters after the step. The test feeds the
recorded gradients to smelt's optimizer, so it checks the update rules alone. torch.optim has no
Lion: its case is the published rule written here with torch ops in float32.
"""
import json
import math

import torch

STEPS = 100
g = torch.Generator().manual_seed(11)
X = torch.randn(5, 3, generator=g)
Y = torch.randn(5, 2, generator=g)
W0 = torch.randn(3, 2, generator=g)
B0 = torch.randn(2, generator=g)


def cosine(init, steps, end):
    return lambda k: end + (init - end) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))


def warmup_cosine(k):
    if k < 10:
        return 0.001 + (0.01 - 0.001) * k / 10
    return cosine(0.01, 90, 0)(k - 10)


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                st = self.state[p]
                if "m" not in st:
                    st["m"] = torch.zeros_like(p)
                m = st["m"]
                c = m * b1 + p.grad * (1 - b1)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(c), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad * (1 - b2))


CASES = {
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05), {}),
    "sgd_momentum_dampening_decay": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), {}),
    "sgd_nesterov_clip_value": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), {"clip_value": 0.1}),
    "adam_decay_warmup_cosine": (lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01), {"schedule": "warmup_cosine"}),
    "adamw_cosine": (lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1), {"schedule": "cosine"}),
    "adamw_clip_norm": (lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6), {"clip_norm": 0.5}),
    "lion": (lambda ps: Lion(ps, lr=0.001, betas=(0.9, 0.99), weight_decay=0.1), {}),
    "adafactor": (lambda ps: torch.optim.Adafactor(ps, lr=0.01), {}),
    "adafactor_decay": (lambda ps: torch.optim.Adafactor(ps, lr=0.05, weight_decay=0.01, beta2_decay=-0.5, d=2.0), {}),
}
SCHEDULES = {"cosine": cosine(0.01, 100, 0.001), "warmup_cosine": warmup_cosine}

out = {"W0": W0.flatten().tolist(), "B0": B0.tolist(), "cases": {}}
for name, (make, extra) in CASES.items():
    W = W0.clone().requires_grad_()
    B = B0.clone().requires_grad_()
    opt = make([W, B])
    steps = []
    for k in range(STEPS):
        if "schedule" in extra:
            for group in opt.param_groups:
                group["lr"] = SCHEDULES[extra["schedule"]](k)
        opt.zero_grad()
        loss = ((torch.tanh(X @ W + B) - Y) ** 2).mean() + 0.05 * (W**4).sum()
        loss.backward()
        raw = [W.grad.flatten().tolist(), B.grad.tolist()]
        if "clip_norm" in extra:
            torch.nn.utils.clip_grad_norm_([W, B], extra["clip_norm"])
        if "clip_value" in extra:
            torch.nn.utils.clip_grad_value_([W, B], extra["clip_value"])
        opt.step()
        steps.append({"gW": raw[0], "gB": raw[1], "W": W.detach().flatten().tolist(), "B": B.detach().tolist()})
    out["cases"][name] = steps
print(json.dumps(out))
