// sm.io: model and weight files.
export { type GGUF, type GGUFTensorInfo, type GGUFValue, loadGGUF } from "./gguf.ts";
