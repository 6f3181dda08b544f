"""Fixtures for test/io/safetensors.test.ts, written and checked by the Python safetensors package.

  python3 scripts/safetensors_reference.py write   # writes test/fixtures/safetensors/python.safetensors
  python3 scripts/safetensors_reference.py check F # loads smelt's file F, prints its tensors as JSON
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

OUT = "test/fixtures/safetensors/python.safetensors"


def tensors():
    g = torch.Generator().manual_seed(13)
    return {
        "weight": torch.randn(3, 4, generator=g),
        "half": torch.randn(5, generator=g).to(torch.float16),
        "brain": torch.randn(2, 3, generator=g).to(torch.bfloat16),
        "ids": torch.tensor([-7, 0, 2147483647], dtype=torch.int32),
        "uids": torch.tensor([0, 4294967295], dtype=torch.uint32),
        "small": torch.tensor([[-128, 5], [127, 0]], dtype=torch.int8),
        "bytes": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def values(v):
    if v.is_floating_point():
        return v.float().flatten().tolist()
    return [int(x) for x in v.to(torch.int64).flatten().tolist()]


def as_json(ts):
    return {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape), "values": values(v)} for k, v in ts.items()}


if sys.argv[1] == "write":
    save_file(tensors(), OUT, metadata={"format": "pt", "note": "smelt fixture"})
    print(json.dumps(as_json(tensors())))
else:
    with safe_open(sys.argv[2], "pt") as f:
        meta = f.metadata()
    print(json.dumps({"tensors": as_json(load_file(sys.argv[2])), "metadata": meta}))
