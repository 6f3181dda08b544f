"""Loss values from torch.nn.functional in float64, for test/nn/losses.test.ts.

  python3 scripts/torch_losses_reference.py > test/fixtures/nn/losses.json
"""
import json

import torch
import torch.nn.functional as F

g = torch.Generator().manual_seed(7)
logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
idx = torch.tensor([0, 4, 2, 2, 1, 3])
probs = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1)
w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
pred = torch.randn(4, 3, generator=g, dtype=torch.float64)
tgt = torch.randn(4, 3, generator=g, dtype=torch.float64)
bin_t = (torch.rand(4, 3, generator=g) > 0.5).double()
p01 = torch.sigmoid(pred)

out = {
    "inputs": {"logits": logits.flatten().tolist(), "idx": idx.tolist(), "probs": probs.flatten().tolist(), "w": w.tolist(),
               "pred": pred.flatten().tolist(), "tgt": tgt.flatten().tolist(), "bin": bin_t.flatten().tolist()},
    "ce_none": F.cross_entropy(logits, idx, reduction="none").tolist(),
    "ce_mean": F.cross_entropy(logits, idx).item(),
    "ce_sum_smooth": F.cross_entropy(logits, idx, reduction="sum", label_smoothing=0.1).item(),
    "ce_weighted_mean": F.cross_entropy(logits, idx, weight=w).item(),
    "ce_weighted_smooth_ignore_mean": F.cross_entropy(logits, idx, weight=w, label_smoothing=0.2, ignore_index=2).item(),
    "ce_ignore_none": F.cross_entropy(logits, idx, ignore_index=2, reduction="none").tolist(),
    "ce_probs_mean": F.cross_entropy(logits, probs).item(),
    "ce_probs_weighted_smooth_none": F.cross_entropy(logits, probs, weight=w, label_smoothing=0.1, reduction="none").tolist(),
    "nll_none": F.nll_loss(torch.log_softmax(logits, -1), idx, reduction="none").tolist(),
    "mse": F.mse_loss(pred, tgt).item(),
    "l1_sum": F.l1_loss(pred, tgt, reduction="sum").item(),
    "bce_logits": F.binary_cross_entropy_with_logits(pred, bin_t).item(),
    "bce_probs_none": F.binary_cross_entropy(p01, bin_t, reduction="none").flatten().tolist(),
}
print(json.dumps(out))
