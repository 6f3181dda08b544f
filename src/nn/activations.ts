/** Activations as functions, and as modules for Sequential. */
import * as ops from "../tensor/ops.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { Module } from "./module.ts";

export const relu = (x: Tensor) => ops.relu(x);
export const gelu = (x: Tensor) => ops.gelu(x);
/** GELU's tanh approximation (PyTorch's approximate="tanh"). */
export const geluApprox = (x: Tensor) => ops.gelu(x, "tanh");
export const silu = (x: Tensor) => ops.silu(x);
export const sigmoid = (x: Tensor) => ops.sigmoid(x);
export const tanh = (x: Tensor) => ops.tanh(x);
export const softplus = (x: Tensor) => ops.softplus(x);

export class ReLU extends Module { override forward(x: Tensor) { return relu(x); } }
export class GELU extends Module {
  constructor(readonly approximate: "none" | "tanh" = "none") { super(); }
  override forward(x: Tensor) { return ops.gelu(x, this.approximate); }
}
export class SiLU extends Module { override forward(x: Tensor) { return silu(x); } }
export class Sigmoid extends Module { override forward(x: Tensor) { return sigmoid(x); } }
export class Tanh extends Module { override forward(x: Tensor) { return tanh(x); } }
export class Softplus extends Module { override forward(x: Tensor) { return softplus(x); } }
