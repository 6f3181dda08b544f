/**
 * Module: a tree of parameters (tensors held in fields) and children (modules in fields, arrays of
 * modules as lists). Paths are the field names joined by dots, list items by their index
 * (`layers.3.mlp.weight`), which is how Hugging Face names the same weights.
 */
import { valueAndGrad as transformValueAndGrad } from "../autograd/transforms.ts";
import { SmeltError } from "../errors.ts";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.ts";
import { Tensor } from "../tensor/tensor.ts";

/** Nested plain objects (fields) and arrays (lists) whose leaves are tensors. */
export type ParamTree = { [key: string]: Tensor | ParamTree | ParamTree[] | Tensor[] };

const isModuleList = (v: unknown): v is Module[] => Array.isArray(v) && v.length > 0 && v.every((m) => m instanceof Module);
const isTensorList = (v: unknown): v is Tensor[] => Array.isArray(v) && v.length > 0 && v.every((t) => t instanceof Tensor);

export class Module {
  #frozen = new Set<string>();
  #training = true;

  /** Subclasses define the computation; calling a module that does not is an error. */
  forward(..._args: unknown[]): unknown {
    throw new SmeltError(`${this.constructor.name}.forward: this module defines no forward`);
  }

  get training(): boolean {
    return this.#training;
  }
  /** Training mode (dropout active) for this module and its children. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.#training = mode;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** This module's own parameter names and its direct children, in field order. */
  #local(): { params: string[]; children: [string, Module][] } {
    const params: string[] = [];
    const children: [string, Module][] = [];
    for (const [k, v] of Object.entries(this)) {
      if (v instanceof Tensor || isTensorList(v)) params.push(k);
      else if (v instanceof Module) children.push([k, v]);
      else if (isModuleList(v)) v.forEach((m, i) => children.push([`${k}.${i}`, m]));
    }
    return { params, children };
  }

  /** Every module below and including this one, with its dotted path ("" for this one). */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [["", this]];
    for (const [k, m] of this.#local().children) for (const [p, c] of m.namedModules()) out.push([p ? `${k}.${p}` : k, c]);
    return out;
  }

  /** Every parameter with its dotted path; tensor lists give `name.i`. */
  namedParameters(opts: { trainable?: boolean } = {}): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules()) {
      for (const k of m.#local().params) {
        if (opts.trainable && m.#frozen.has(k)) continue;
        const full = path ? `${path}.${k}` : k;
        const v = (m as unknown as Record<string, Tensor | Tensor[]>)[k]!;
        if (v instanceof Tensor) out.push([full, v]);
        else v.forEach((t, i) => out.push([`${full}.${i}`, t]));
      }
    }
    return out;
  }

  #tree(trainable: boolean): ParamTree {
    const out: ParamTree = {};
    const self = this as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(self)) {
      if (v instanceof Tensor || isTensorList(v)) {
        if (!(trainable && this.#frozen.has(k))) out[k] = v;
      } else if (v instanceof Module) {
        const sub = v.#tree(trainable);
        if (!trainable || Object.keys(sub).length > 0) out[k] = sub;
      } else if (isModuleList(v)) {
        out[k] = v.map((m) => m.#tree(trainable));
      }
    }
    return out;
  }
  /** All parameters as nested plain objects keyed by field names (arrays for lists). */
  parameters(): ParamTree {
    return this.#tree(false);
  }
  /** The parameters that are not frozen, in the same shape. */
  trainableParameters(): ParamTree {
    return this.#tree(true);
  }

  #setFrozen(frozen: boolean, opts: { keys?: string | string[]; recurse?: boolean }): this {
    const keys = opts.keys === undefined ? undefined : Array.isArray(opts.keys) ? opts.keys : [opts.keys];
    const modules = opts.recurse === false ? ([["", this]] as [string, Module][]) : this.namedModules();
    const matched = new Set<string>();
    for (const [path, m] of modules) {
      for (const k of m.#local().params) {
        const full = path ? `${path}.${k}` : k;
        const hit = keys === undefined ? undefined : keys.find((key) => key === k || key === full);
        if (keys !== undefined && hit === undefined) continue;
        if (hit !== undefined) matched.add(hit);
        if (frozen) m.#frozen.add(k);
        else m.#frozen.delete(k);
      }
    }
    const missing = keys?.filter((k) => !matched.has(k)) ?? [];
    if (missing.length > 0) throw new SmeltError(`${frozen ? "freeze" : "unfreeze"}: no parameter named ${missing.map((k) => `"${k}"`).join(", ")}`);
    return this;
  }
  /** Excludes parameters from trainableParameters (all, or those named by local name or dotted path). */
  freeze(opts: { keys?: string | string[]; recurse?: boolean } = {}): this {
    return this.#setFrozen(true, opts);
  }
  unfreeze(opts: { keys?: string | string[]; recurse?: boolean } = {}): this {
    return this.#setFrozen(false, opts);
  }

  /**
   * Replaces parameters with the tensors of tree (shaped as parameters() is). Strict: every name
   * must be a parameter of the same shape; otherwise names that are not are skipped.
   */
  update(tree: ParamTree, opts: { strict?: boolean } = {}): this {
    const strict = opts.strict ?? true;
    const walk = (m: Module, t: unknown, path: string) => {
      if (!t || typeof t !== "object" || Array.isArray(t)) throw new SmeltError(`update: ${path || "the tree"} must be an object of parameters`);
      const self = m as unknown as Record<string, unknown>;
      for (const [k, v] of Object.entries(t as Record<string, unknown>)) {
        const full = path ? `${path}.${k}` : k;
        const cur = self[k];
        if (cur instanceof Tensor) {
          if (!(v instanceof Tensor)) throw new SmeltError(`update: ${full} must be a tensor`);
          if (strict && (v.shape.length !== cur.shape.length || v.shape.some((d, i) => d !== cur.shape[i])))
            throw new SmeltError(`update: ${full} has shape [${cur.shape}], got [${v.shape}]`);
          self[k] = v;
        } else if (isTensorList(cur)) {
          if (!isTensorList(v) || v.length !== cur.length) throw new SmeltError(`update: ${full} must be a list of ${cur.length} tensors`);
          self[k] = [...v];
        } else if (cur instanceof Module) walk(cur, v, full);
        else if (isModuleList(cur)) {
          if (!Array.isArray(v) || v.length > cur.length) throw new SmeltError(`update: ${full} must be a list of at most ${cur.length} entries`);
          v.forEach((sub, i) => walk(cur[i]!, sub, `${full}.${i}`));
        } else if (strict) throw new SmeltError(`update: ${this.constructor.name} has no parameter or module ${full}`);
      }
    };
    walk(this, tree, "");
    return this;
  }

  /** Calls fn on every module with its dotted path (this one first, as ""). */
  applyToModules(fn: (path: string, module: Module) => void): this {
    for (const [p, m] of this.namedModules()) fn(p, m);
    return this;
  }

  /**
   * Loads parameters by dotted path from a safetensors file or from [path, tensor] entries. Strict:
   * the names must be exactly this module's; shapes must match either way. The error lists every
   * missing, unexpected and mismatched name.
   */
  loadWeights(pathOrEntries: string | [string, Tensor][] | Record<string, Tensor>, opts: { strict?: boolean } = {}): this {
    const strict = opts.strict ?? true;
    const given: Record<string, Tensor> =
      typeof pathOrEntries === "string" ? loadSafetensors(pathOrEntries).tensors : Array.isArray(pathOrEntries) ? Object.fromEntries(pathOrEntries) : pathOrEntries;
    const own = new Map(this.namedParameters());
    const problems: string[] = [];
    const unexpected = Object.keys(given).filter((k) => !own.has(k));
    const missing = [...own.keys()].filter((k) => !(k in given));
    if (strict && unexpected.length > 0) problems.push(`unexpected: ${unexpected.join(", ")}`);
    if (strict && missing.length > 0) problems.push(`missing: ${missing.join(", ")}`);
    for (const [k, t] of Object.entries(given)) {
      const cur = own.get(k);
      if (!(t instanceof Tensor)) problems.push(`${k} is not a tensor`);
      else if (cur && (t.shape.length !== cur.shape.length || t.shape.some((d, i) => d !== cur.shape[i])))
        problems.push(`${k} has shape [${t.shape}], the module's is [${cur.shape}]`);
    }
    if (problems.length > 0) throw new SmeltError(`loadWeights: ${problems.join("; ")}`);
    for (const [k, t] of Object.entries(given)) if (own.has(k)) this.#setPath(k, t);
    return this;
  }
  /** Writes every parameter under its dotted path to a safetensors file (atomically). */
  saveWeights(path: string, metadata?: Record<string, string>): void {
    saveSafetensors(path, Object.fromEntries(this.namedParameters()), metadata);
  }

  #setPath(path: string, t: Tensor): void {
    const parts = path.split(".");
    let at: unknown = this;
    for (const p of parts.slice(0, -1)) at = (at as Record<string, unknown>)[p];
    const last = parts[parts.length - 1]!;
    const holder = at as Record<string, unknown>;
    // `name.i` of a tensor list: holder is the list itself.
    holder[last] = t;
  }
}

/**
 * `(...args) => [loss, grads]` where fn(...args) computes the loss (fn receives the same arguments,
 * the model first) and grads has the shape of model.trainableParameters(). Frozen parameters are
 * constants of the traced graph, so no backward work reaches them.
 */
export function valueAndGrad<M extends Module, A extends unknown[]>(model: M, fn: (model: M, ...args: A) => unknown): (model: M, ...args: A) => [Tensor | unknown[], ParamTree] {
  if (!(model instanceof Module)) throw new SmeltError("nn.valueAndGrad: model must be an nn.Module");
  if (typeof fn !== "function") throw new SmeltError("nn.valueAndGrad: fn must be a function");
  const inner = transformValueAndGrad((params: ParamTree, m: M, ...args: A) => {
    m.update(params);
    return fn(m, ...args) as Tensor;
  });
  return (m: M, ...args: A) => {
    const saved = m.trainableParameters();
    try {
      const [value, grads] = inner(saved, m, ...args);
      return [value as Tensor, grads as ParamTree];
    } finally {
      // Not strict: the traced leaves in the model are disposed by now, so their shapes are unreadable.
      m.update(saved, { strict: false });
    }
  };
}
