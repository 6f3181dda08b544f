/** sm.nn: modules, layers, activations, losses and initialisers. */
export { Module, valueAndGrad, type ParamTree } from "./module.ts";
export { QuantizedEmbedding, QuantizedLinear } from "./quantized.ts";
export { Dropout, Embedding, LayerNorm, Linear, MultiHeadAttention, RMSNorm, RoPE, Sequential } from "./layers.ts";
export { GELU, gelu, geluApprox, ReLU, relu, Sigmoid, sigmoid, SiLU, silu, Softplus, softplus, Tanh, tanh } from "./activations.ts";
export * as losses from "./losses.ts";
export * as init from "./init.ts";
