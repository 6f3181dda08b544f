/** Reading and writing tensors in file formats; one export line per format. */
export { loadSafetensors, saveSafetensors, type Safetensors } from "./safetensors.ts";
