// sm.lora: LoRA adapters (PEFT-compatible), their data pipeline and a trainer.
export { apply, countTrainable, LoRAFactor, type LoRAConfig, LoRALinear, type LoRAOptions, loraLayers, merge, type Targets, unmerge } from "./lora.ts";
export { load, save } from "./adapters.ts";
export { type Batch, batchOrder, type Example, encodeRecord, makeBatch, readSplit, type Record_ as DataRecord, type TextTokenizer } from "./data.ts";
export { maskedLoss } from "./loss.ts";
export { lossSvg } from "./plot.ts";
export { type EvalInfo, type ReportInfo, type StepInfo, Trainer, type TrainerOptions, type TrainResult, train } from "./trainer.ts";
