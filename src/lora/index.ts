// sm.lora: LoRA adapters (PEFT-compatible), their data pipeline and a trainer.
export { apply, countTrainable, LoRAFactor, type LoRAConfig, LoRALinear, type LoRAOptions, loraLayers, merge, type Targets, unmerge } from "./lora.ts";
export { load, save } from "./adapters.ts";
