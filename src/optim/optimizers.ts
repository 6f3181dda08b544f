/**
 * Optimizers with PyTorch's update rules and defaults, so a trajectory matches torch.optim step for
 * step. Each update is a lazy graph per parameter; the learning rate, step and bias corrections
 * enter it as JS numbers, which are kernel arguments, so updates after the first compile nothing.
 */
import { SmeltError } from "../errors.ts";
import { itemsize } from "../graph/dtype.ts";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.ts";
import { Module, type ParamTree } from "../nn/module.ts";
import * as ops from "../tensor/ops.ts";
import { Tensor, tidy } from "../tensor/tensor.ts";
import type { Schedule } from "./schedules.ts";
import { mapLeaves } from "./trees.ts";

type Slots = Record<string, Tensor>;
/**
 * A constant of the update (a beta, its complement, a step size), named by its role, with the
 * value it has in this update, of the parameter's shape and the dtype of `like`: one tensor per role, shape and dtype
 * serves every parameter's update, so an update of hundreds of parameters builds, walks and
 * schedules thousands fewer nodes than with a constant per use. By role, not by value: two roles
 * whose values happen to meet must not become one node, or the graph, and so its kernels, would
 * change with the values.
 */
type Constant = (role: string, value: number, like: Tensor) => Tensor;
const STATE_KEY = "smelt.optimizer";

/** Zeros with real storage: a buffer from the start keeps the first update's kernels those of every later one. */
const zerosLike = (p: Tensor, shape: readonly number[] = p.shape) =>
  ops.fromBytes(new Uint8Array(shape.reduce((a, b) => a * b, 1) * itemsize(p.dtype)), shape, p.dtype);

function positiveNumber(op: string, what: string, v: number, allowZero = true): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
    throw new SmeltError(`${op}: ${what} must be a ${allowZero ? "non-negative" : "positive"} number, got ${String(v)}`);
  return v;
}
function beta(op: string, what: string, v: number): number {
  if (!(v >= 0 && v < 1)) throw new SmeltError(`${op}: ${what} must be in [0, 1), got ${v}`);
  return v;
}

export abstract class Optimizer {
  /** Updates done so far. */
  step = 0;
  /** Per-parameter slots by dotted path: `state["layers.0.weight"].m`. */
  state: Record<string, Slots> = {};
  #lr: number | Schedule;

  constructor(learningRate: number | Schedule) {
    this.#lr = this.#checkLr(learningRate);
  }
  #checkLr(lr: number | Schedule): number | Schedule {
    if (typeof lr === "function") return lr;
    return positiveNumber(this.constructor.name, "learningRate", lr);
  }
  /** The rate the next update uses: the number, or the schedule at `step`. */
  get learningRate(): number {
    return typeof this.#lr === "function" ? this.#lr(this.step) : this.#lr;
  }
  set learningRate(lr: number | Schedule) {
    this.#lr = this.#checkLr(lr);
  }

  protected abstract initSlots(p: Tensor): Slots;
  /** The parameter's new value and slots after update `t` (1 for the first); `k` gives the constants it multiplies or adds. */
  protected abstract apply(g: Tensor, p: Tensor, slots: Slots, lr: number, t: number, k: Constant): [Tensor, Slots];

  /** Creates the slots of parameters that have none (update does so itself when needed). */
  init(params: ParamTree | Module): void {
    const tree = params instanceof Module ? params.trainableParameters() : params;
    mapLeaves(tree, (p, path) => {
      if (!this.state[path]) this.state[path] = this.initSlots(p);
    });
  }

  /**
   * Applies grads (shaped as model.trainableParameters()) to the model's parameters. The optimizer
   * owns what it replaces: the previous parameters and slots are disposed (the new lazy values
   * still read them until evaluated).
   */
  update(model: Module, grads: ParamTree): void {
    if (!(model instanceof Module)) throw new SmeltError(`${this.constructor.name}.update: model must be an nn.Module`);
    const params = new Map(model.namedParameters());
    mapLeaves(grads, (g, path) => {
      const p = params.get(path);
      if (!p) throw new SmeltError(`${this.constructor.name}.update: the model has no parameter ${path}`);
      if (g.shape.length !== p.shape.length || g.shape.some((d, i) => d !== p.shape[i]))
        throw new SmeltError(`${this.constructor.name}.update: gradient ${path} has shape [${g.shape}], the parameter [${p.shape}]`);
    });
    const lr = this.learningRate;
    const t = this.step + 1;
    const old: Tensor[] = [];
    const [next, state] = tidy(() => {
      // By shape (a parameter's tensors all have its shape), then by role and dtype.
      const constants = new Map<string, Map<string, Tensor>>();
      const state: Record<string, Slots> = {};
      const next = mapLeaves(grads, (g, path) => {
        const p = params.get(path)!;
        const shape = p.shape;
        const shapeKey = shape.join(",");
        let byRole = constants.get(shapeKey);
        if (!byRole) constants.set(shapeKey, (byRole = new Map()));
        const k: Constant = (role, value, like) => {
          const key = `${role} ${like.dtype}`;
          let c = byRole.get(key);
          if (!c) byRole.set(key, (c = ops.full(shape, value, like.dtype)));
          return c;
        };
        const slots = this.state[path] ?? this.initSlots(p);
        const [np, ns] = this.apply(g, p, slots, lr, t, k);
        old.push(p, ...Object.values(slots));
        state[path] = ns;
        return np;
      }) as ParamTree;
      return [next, state] as const;
    });
    Object.assign(this.state, state);
    model.update(next);
    this.step = t;
    for (const x of old) x.dispose();
  }

  /** Hyperparameters recorded beside the state, so a saved file says what produced it. */
  protected abstract config(): Record<string, unknown>;

  /** Writes step and slots to a safetensors file (slots as `path.slot`, the rest as JSON metadata). */
  saveState(path: string): void {
    const tensors: Record<string, Tensor> = {};
    for (const [p, slots] of Object.entries(this.state)) for (const [k, v] of Object.entries(slots)) tensors[`${p}.${k}`] = v;
    const meta = { optimizer: this.constructor.name, step: this.step, config: this.config(), slots: Object.fromEntries(Object.entries(this.state).map(([p, s]) => [p, Object.keys(s)])) };
    saveSafetensors(path, tensors, { [STATE_KEY]: JSON.stringify(meta) });
  }
  /** Restores what saveState wrote, for an exact resume. */
  loadState(path: string): void {
    const { tensors, metadata } = loadSafetensors(path);
    const raw = metadata[STATE_KEY];
    if (!raw) throw new SmeltError(`${this.constructor.name}.loadState: ${path} holds no optimizer state`);
    const meta = JSON.parse(raw) as { optimizer: string; step: number; config: Record<string, unknown>; slots: Record<string, string[]> };
    if (meta.optimizer !== this.constructor.name) throw new SmeltError(`${this.constructor.name}.loadState: ${path} holds ${meta.optimizer} state`);
    const state: Record<string, Slots> = {};
    for (const [p, names] of Object.entries(meta.slots)) {
      state[p] = {};
      for (const n of names) {
        const t = tensors[`${p}.${n}`];
        if (!t) throw new SmeltError(`${this.constructor.name}.loadState: ${path} lacks ${p}.${n}`);
        state[p]![n] = t;
      }
    }
    for (const slots of Object.values(this.state)) for (const t of Object.values(slots)) t.dispose();
    this.state = state;
    this.step = meta.step;
  }
}

/** SGD with momentum, dampening, weight decay (L2, added to the gradient) and Nesterov, as torch.optim.SGD. */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  constructor(opts: { learningRate?: number | Schedule; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean } = {}) {
    super(opts.learningRate ?? 1e-3);
    this.momentum = positiveNumber("SGD", "momentum", opts.momentum ?? 0);
    this.dampening = positiveNumber("SGD", "dampening", opts.dampening ?? 0);
    this.weightDecay = positiveNumber("SGD", "weightDecay", opts.weightDecay ?? 0);
    this.nesterov = opts.nesterov ?? false;
    if (this.nesterov && (this.momentum === 0 || this.dampening !== 0)) throw new SmeltError("SGD: nesterov needs a momentum and zero dampening");
  }
  protected initSlots(p: Tensor): Slots {
    return this.momentum === 0 ? {} : { momentumBuffer: zerosLike(p) };
  }
  protected apply(g: Tensor, p: Tensor, s: Slots, lr: number, t: number, k: Constant): [Tensor, Slots] {
    let d = this.weightDecay ? ops.add(g, ops.multiply(p, k("decay", this.weightDecay, p))) : g;
    if (this.momentum === 0) return [ops.subtract(p, ops.multiply(d, k("lr", lr, d))), {}];
    // PyTorch starts the buffer at the first gradient undamped; with a zero buffer that is a
    // coefficient of 1 on the gradient at t = 1, passed as an argument like the later ones.
    const buf = ops.add(ops.multiply(s.momentumBuffer!, k("momentum", t === 1 ? 0 : this.momentum, p)), ops.multiply(d, k("damped", t === 1 ? 1 : 1 - this.dampening, d)));
    d = this.nesterov ? ops.add(d, ops.multiply(buf, k("nesterov", this.momentum, buf))) : buf;
    return [ops.subtract(p, ops.multiply(d, k("lr", lr, d))), { momentumBuffer: buf }];
  }
  protected config() {
    return { momentum: this.momentum, dampening: this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov };
  }
}

interface AdamOptions {
  learningRate?: number | Schedule;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  biasCorrection?: boolean;
}

/**
 * Adam as torch.optim.Adam: weight decay is L2 (added to the gradient), bias correction on by
 * default (MLX's Adam defaults it off; pass biasCorrection: false for MLX's trajectories).
 */
export class Adam extends Optimizer {
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly biasCorrection: boolean;
  protected readonly decoupled: boolean = false;
  constructor(opts: AdamOptions = {}, defaultDecay = 0) {
    super(opts.learningRate ?? 1e-3);
    const name = this.constructor.name;
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    this.betas = [beta(name, "betas[0]", b1), beta(name, "betas[1]", b2)];
    this.eps = positiveNumber(name, "eps", opts.eps ?? 1e-8);
    this.weightDecay = positiveNumber(name, "weightDecay", opts.weightDecay ?? defaultDecay);
    this.biasCorrection = opts.biasCorrection ?? true;
  }
  protected initSlots(p: Tensor): Slots {
    return { m: zerosLike(p), v: zerosLike(p) };
  }
  protected apply(g: Tensor, p: Tensor, s: Slots, lr: number, t: number, k: Constant): [Tensor, Slots] {
    const [b1, b2] = this.betas;
    let base = p;
    if (this.weightDecay && this.decoupled) base = ops.multiply(p, k("shrink", 1 - lr * this.weightDecay, p));
    else if (this.weightDecay) g = ops.add(g, ops.multiply(p, k("decay", this.weightDecay, p)));
    const m = ops.add(ops.multiply(s.m!, k("b1", b1, s.m!)), ops.multiply(g, k("1-b1", 1 - b1, g)));
    const g2 = ops.square(g);
    const v = ops.add(ops.multiply(s.v!, k("b2", b2, s.v!)), ops.multiply(g2, k("1-b2", 1 - b2, g2)));
    const bc1 = this.biasCorrection ? 1 - b1 ** t : 1;
    const bc2 = this.biasCorrection ? 1 - b2 ** t : 1;
    const root = ops.sqrt(v);
    const denom = ops.add(ops.divide(root, k("sqrt(bc2)", Math.sqrt(bc2), root)), k("eps", this.eps, root));
    const ratio = ops.divide(m, denom);
    return [ops.subtract(base, ops.multiply(ratio, k("step", lr / bc1, ratio))), { m, v }];
  }
  protected config() {
    return { betas: this.betas, eps: this.eps, weightDecay: this.weightDecay, biasCorrection: this.biasCorrection };
  }
}

/** AdamW as torch.optim.AdamW: decoupled weight decay p·(1 - lr·wd), default 0.01. */
export class AdamW extends Adam {
  protected override readonly decoupled = true;
  constructor(opts: AdamOptions = {}) {
    super(opts, 0.01);
  }
}

/** Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay. */
export class Lion extends Optimizer {
  readonly betas: [number, number];
  readonly weightDecay: number;
  constructor(opts: { learningRate?: number | Schedule; betas?: [number, number]; weightDecay?: number } = {}) {
    super(opts.learningRate ?? 1e-4);
    const [b1, b2] = opts.betas ?? [0.9, 0.99];
    this.betas = [beta("Lion", "betas[0]", b1), beta("Lion", "betas[1]", b2)];
    this.weightDecay = positiveNumber("Lion", "weightDecay", opts.weightDecay ?? 0);
  }
  protected initSlots(p: Tensor): Slots {
    return { m: zerosLike(p) };
  }
  protected apply(g: Tensor, p: Tensor, s: Slots, lr: number, _t: number, k: Constant): [Tensor, Slots] {
    const [b1, b2] = this.betas;
    const c = ops.add(ops.multiply(s.m!, k("b1", b1, s.m!)), ops.multiply(g, k("1-b1", 1 - b1, g)));
    const base = this.weightDecay ? ops.multiply(p, k("shrink", 1 - lr * this.weightDecay, p)) : p;
    const m = ops.add(ops.multiply(s.m!, k("b2", b2, s.m!)), ops.multiply(g, k("1-b2", 1 - b2, g)));
    const sign = ops.sign(c);
    return [ops.subtract(base, ops.multiply(sign, k("lr", lr, sign))), { m }];
  }
  protected config() {
    return { betas: this.betas, weightDecay: this.weightDecay };
  }
}

/**
 * Adafactor as torch.optim.Adafactor: factored second moments (row and column means) for
 * parameters of two or more dimensions, a relative step size and update clipping by RMS.
 */
export class Adafactor extends Optimizer {
  readonly beta2Decay: number;
  readonly eps: [number | null, number];
  readonly d: number;
  readonly weightDecay: number;
  constructor(opts: { learningRate?: number | Schedule; beta2Decay?: number; eps?: [number | null, number]; d?: number; weightDecay?: number } = {}) {
    super(opts.learningRate ?? 1e-2);
    this.beta2Decay = opts.beta2Decay ?? -0.8;
    if (!(this.beta2Decay <= 0)) throw new SmeltError(`Adafactor: beta2Decay must be non-positive, got ${this.beta2Decay}`);
    this.eps = opts.eps ?? [null, 1e-3];
    this.d = opts.d ?? 1;
    if (!(this.d >= 1)) throw new SmeltError(`Adafactor: d (the clipping threshold) must be at least 1, got ${this.d}`);
    this.weightDecay = positiveNumber("Adafactor", "weightDecay", opts.weightDecay ?? 0);
  }
  protected initSlots(p: Tensor): Slots {
    if (p.shape.length < 2) return { variance: zerosLike(p) };
    const s = p.shape;
    return { rowVar: zerosLike(p, [...s.slice(0, -1), 1]), colVar: zerosLike(p, [...s.slice(0, -2), 1, s[s.length - 1]!]) };
  }
  protected apply(g: Tensor, p: Tensor, s: Slots, lr: number, t: number): [Tensor, Slots] {
    // The machine epsilon of float32, as PyTorch takes it from the parameter's dtype.
    const eps1 = this.eps[0] ?? 2 ** -23;
    const w = t ** this.beta2Decay;
    const rho = Math.min(lr, 1 / Math.sqrt(t));
    const n = p.size;
    const rms = (x: Tensor) => ops.divide(ops.sqrt(ops.sum(ops.square(x))), Math.sqrt(n));
    const alpha = ops.multiply(ops.maximum(rms(p), this.eps[1]), rho);
    const base = this.weightDecay ? ops.multiply(p, 1 - lr * this.weightDecay) : p;
    const lerp = (a: Tensor, b: Tensor) => ops.add(a, ops.multiply(ops.subtract(b, a), w));
    const g2 = ops.square(g);
    let est: Tensor;
    let slots: Slots;
    if (p.shape.length >= 2) {
      const rowVar = lerp(s.rowVar!, ops.mean(g2, -1, true));
      const colVar = lerp(s.colVar!, ops.mean(g2, -2, true));
      est = ops.divide(ops.multiply(rowVar, colVar), ops.maximum(ops.mean(rowVar, -2, true), eps1));
      slots = { rowVar, colVar };
    } else {
      est = lerp(s.variance!, g2);
      slots = { variance: est };
    }
    const u = ops.multiply(ops.rsqrt(ops.maximum(est, eps1 * eps1)), g);
    const denom = ops.maximum(ops.divide(rms(u), this.d), 1);
    return [ops.subtract(base, ops.multiply(u, ops.divide(alpha, denom))), slots];
  }
  protected config() {
    return { beta2Decay: this.beta2Decay, eps: this.eps, d: this.d, weightDecay: this.weightDecay };
  }
}
