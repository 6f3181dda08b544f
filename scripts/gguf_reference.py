"""Writes test/fixtures/gguf/tiny.gguf, a small GGUF file with a tensor of each type smelt reads
and a metadata value of each GGUF value type, and tiny.json, each tensor's float32 values as the
`gguf` package (pip install gguf) dequantizes them. Quantized blocks are random bytes with their
scale fields set to finite float16 values, so every quant and bit pattern is exercised.

Run from the repository root: python3 scripts/gguf_reference.py
"""
import json
from importlib.metadata import version
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = "test/fixtures/gguf"
rng = np.random.default_rng(14)

# (block elements, block bytes, byte offsets of the float16 scale fields in a block)
BLOCKS = {
    Q.Q8_0: (32, 34, [0]),
    Q.Q4_0: (32, 18, [0]),
    Q.Q4_1: (32, 20, [0, 2]),
    Q.Q4_K: (256, 144, [0, 2]),
    Q.Q6_K: (256, 210, [208]),
}


def random_blocks(qtype, rows, cols):
    elems, size, scales = BLOCKS[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // elems, size), dtype=np.uint8)
    for at in scales:
        d = rng.uniform(-0.05, 0.05, size=len(blocks)).astype(np.float16)
        blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, cols // elems * size)


writer = gguf.GGUFWriter(f"{OUT}/tiny.gguf", arch="tiny")
writer.add_key_value("tiny.u8", 200, gguf.GGUFValueType.UINT8)
writer.add_key_value("tiny.i8", -100, gguf.GGUFValueType.INT8)
writer.add_key_value("tiny.u16", 60000, gguf.GGUFValueType.UINT16)
writer.add_key_value("tiny.i16", -30000, gguf.GGUFValueType.INT16)
writer.add_key_value("tiny.u32", 4000000000, gguf.GGUFValueType.UINT32)
writer.add_key_value("tiny.i32", -2000000000, gguf.GGUFValueType.INT32)
writer.add_key_value("tiny.f32", 0.25, gguf.GGUFValueType.FLOAT32)
writer.add_key_value("tiny.bool", True, gguf.GGUFValueType.BOOL)
writer.add_key_value("tiny.str", "héllo ✓", gguf.GGUFValueType.STRING)
writer.add_key_value("tiny.u64", 2**53 + 2, gguf.GGUFValueType.UINT64)
writer.add_key_value("tiny.i64", -5, gguf.GGUFValueType.INT64)
writer.add_key_value("tiny.f64", 1.0 / 3.0, gguf.GGUFValueType.FLOAT64)
writer.add_key_value("tiny.ints", [1, -2, 3], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
writer.add_key_value("tiny.strs", ["a", "", "ü c"], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)
writer.add_key_value("tiny.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.ARRAY)

expected = {}
f32 = rng.standard_normal((2, 3)).astype(np.float32)
writer.add_tensor("f32", f32)
expected["f32"] = {"type": "F32", "shape": [2, 3], "values": f32.ravel().tolist()}
f16 = rng.standard_normal(4).astype(np.float16)
writer.add_tensor("f16", f16)
expected["f16"] = {"type": "F16", "shape": [4], "values": f16.astype(np.float32).tolist()}
bf16 = (rng.standard_normal((2, 2)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
writer.add_tensor("bf16", bf16.view(np.uint8).reshape(2, 4), raw_dtype=Q.BF16)
expected["bf16"] = {"type": "BF16", "shape": [2, 2], "values": (bf16.astype(np.uint32) << 16).view(np.float32).ravel().tolist()}
for qtype, (rows, cols) in {Q.Q8_0: (3, 64), Q.Q4_0: (2, 64), Q.Q4_1: (2, 96), Q.Q4_K: (2, 256), Q.Q6_K: (3, 512)}.items():
    raw = random_blocks(qtype, rows, cols)
    writer.add_tensor(qtype.name.lower(), raw, raw_dtype=qtype)
    values = gguf.quants.dequantize(raw, qtype).astype(np.float32)
    assert values.shape == (rows, cols)
    expected[qtype.name.lower()] = {"type": qtype.name, "shape": [rows, cols], "values": values.ravel().tolist()}

writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
with open(f"{OUT}/tiny.json", "w") as f:
    json.dump({"gguf": version("gguf"), "tensors": expected}, f)

# Checks on real tensors of SmolLM2 (scripts/fetch-model.sh), when it is in the cache: sums and a
# few values of each tensor's dequantization, small enough to commit.
import os
model = os.path.join(os.environ.get("SMELT_MODELS_DIR", os.path.expanduser("~/.cache/smelt/models")), "SmolLM2-135M-Instruct.Q4_1.gguf")
if os.path.exists(model):
    reader = gguf.GGUFReader(model)
    picks = {"token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"}
    checks = {}
    for t in reader.tensors:
        if t.name not in picks:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).ravel().astype(np.float64)
        at = np.linspace(0, len(values) - 1, 16).astype(np.int64)
        checks[t.name] = {
            "type": t.tensor_type.name, "shape": [int(d) for d in reversed(t.shape)],
            "sum": float(values.sum()), "sumsq": float((values * values).sum()),
            "at": at.tolist(), "values": values[at].tolist(),
        }
    with open(f"{OUT}/smollm2.json", "w") as f:
        json.dump(checks, f, indent=1)
