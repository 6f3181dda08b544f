/** Reading and writing tensors in file formats; one export line per format. */
export { loadSafetensors, saveSafetensors, type Safetensors } from "./safetensors.ts";
export { type GGUF, type GGUFTensorInfo, type GGUFValue, loadGGUF } from "./gguf.ts";
