/**
 * Command buffers: dispatches are validated when they are called, packed into a RecordStream, and
 * handed to the backend in batches; commit submits them, and wait() or completed() observe the end.
 */
import type { Pointer } from "bun:ffi";
import { SmeltError } from "../errors.ts";
import { type DeviceCore, NativeObject } from "./core.ts";
import type { Device } from "./device.ts";
import {
  clearErr,
  errBuf,
  errLen,
  errText,
  SMELT_CMD_COMPLETED,
  SMELT_CMD_TIMEOUT,
  SMELT_OK,
} from "./native.ts";
import {
  BIND_BUFFER,
  BIND_BYTES,
  type Binding,
  MAX_BUFFER_SLOTS,
  MAX_THREADGROUP_SLOTS,
  REC_DISPATCH_THREADGROUPS,
  REC_DISPATCH_THREADS,
  RecordStream,
  tooManyThreadgroupSlots,
} from "./records.ts";
import { DeviceBuffer, Pipeline } from "./resources.ts";

/** What args[i] may be: it binds [[buffer(i)]]. Typed arrays, ArrayBuffers and DataViews are
 * copied as constant bytes (at most 4096); null or undefined fill a slot the kernel does not have. */
export type DispatchArg =
  | DeviceBuffer
  | { readonly buffer: DeviceBuffer; readonly offset: number }
  | ArrayBufferView
  | ArrayBuffer
  | null
  | undefined;

/** 1 to 3 positive integers; missing dimensions are 1. */
export type Dims = readonly number[];

interface DispatchCommon {
  readonly args: readonly DispatchArg[];
  /** Threads per threadgroup. */
  readonly threadgroup: Dims;
  /** Byte lengths of the kernel's [[threadgroup(i)]] arguments (Metal rounds each up to 16). */
  readonly threadgroupMemory?: readonly number[];
}

export interface DispatchThreadsOptions extends DispatchCommon {
  /** Threads in the grid; the edges may be partial threadgroups. */
  readonly grid: Dims;
}

export interface DispatchThreadgroupsOptions extends DispatchCommon {
  /** Threadgroups in the grid. */
  readonly threadgroups: Dims;
}

export type CommandBufferState = "recording" | "committed" | "completed" | "failed" | "disposed";

const MAX_BYTES_BINDING = 4096;
const NO_LENGTHS: readonly number[] = [];
const MAX_DIM = 4294967295;
/** Records batched in JS before one smelt_cmd_encode call. */
const BATCH_RECORDS = 256;
/** completed() polls this many times without a delay before it sleeps 1 ms between polls. */
const EAGER_POLLS = 16;

export class CommandBuffer extends NativeObject {
  readonly device: Device;
  #state: CommandBufferState = "recording";
  #sequence = 0;
  #failure = "";
  readonly #stream = new RecordStream();

  /** @internal Made by Device.commandBuffer(). */
  constructor(device: Device, core: DeviceCore, handle: Pointer) {
    super(core, handle, "cmd", "command buffer");
    this.device = device;
  }

  get state(): CommandBufferState {
    return this.disposed ? "disposed" : this.#state;
  }

  /** Its place in the device's commit order, compared with Device.completedCount() (0 until committed). */
  get sequence(): number {
    return this.#sequence;
  }

  dispatchThreads(pipeline: Pipeline, options: DispatchThreadsOptions): void {
    this.#dispatch("dispatchThreads", REC_DISPATCH_THREADS, pipeline, options, options?.grid, "grid");
  }

  dispatchThreadgroups(pipeline: Pipeline, options: DispatchThreadgroupsOptions): void {
    this.#dispatch("dispatchThreadgroups", REC_DISPATCH_THREADGROUPS, pipeline, options, options?.threadgroups, "threadgroups");
  }

  /**
   * @internal The engine's dispatch (exec/realize.ts): `params` bound at [[buffer(0)]], then
   * `buffers` from [[buffer(1)]] on, no threadgroup memory. What the public calls check here
   * about the kernel's signature and limits, the backend checks again as it takes the records
   * (smelt_records_check), and the engine's kernels are made to fit; what can change at run time
   * (this command buffer's state, the device, disposed buffers) is checked here.
   */
  dispatchKernel(kind: typeof REC_DISPATCH_THREADS | typeof REC_DISPATCH_THREADGROUPS, pipeline: Pipeline, size: readonly [number, number, number], group: readonly [number, number, number], params: Uint32Array, buffers: readonly DeviceBuffer[]): void {
    const call = "eval";
    const cmd = this.#recording(call);
    if (pipeline.device !== this.device) throw new SmeltError(`${call}: the pipeline belongs to another device`);
    const pipe = pipeline.handleFor(call);
    this.core.depend(cmd, pipe);
    const bindings: Binding[] = [{ index: 0, kind: BIND_BYTES, data: new Uint8Array(params.buffer, params.byteOffset, params.byteLength) }];
    for (let i = 0; i < buffers.length; i++) {
      const handle = this.#bufferHandle(call, i + 1, buffers[i]!);
      this.core.depend(cmd, handle);
      bindings.push({ index: i + 1, kind: BIND_BUFFER, buffer: handle, offset: 0 });
    }
    this.#stream.dispatch(kind, pipe, size, group, bindings, NO_LENGTHS);
    this.#flushIfFull(call);
  }

  /** Dispatches after the barrier see every write of the dispatches before it. */
  barrier(): void {
    this.#recording("barrier");
    this.#stream.barrier();
    this.#flushIfFull("barrier");
  }

  /** Submits the command buffer; it can be committed once. */
  commit(): void {
    const cmd = this.#recording("commit");
    this.#flush("commit");
    clearErr();
    const sequence = this.core.native.smelt_cmd_commit(cmd, errBuf, errLen);
    if (sequence === 0) this.#fail("commit", this.#lostCheck(errText()));
    this.#sequence = Number(sequence);
    this.#state = "committed";
  }

  /**
   * Blocks until the device finished the command buffer, or throws when it failed or when
   * `timeoutMs` (0: no limit) passed first.
   */
  wait(timeoutMs = 0): void {
    const call = "wait";
    if (!Number.isInteger(timeoutMs) || timeoutMs < 0) {
      throw new SmeltError(`${call}: timeoutMs must be a non-negative integer (0 waits without limit), got ${timeoutMs}`);
    }
    if (!this.#awaitable(call)) return;
    clearErr();
    const status = this.core.native.smelt_cmd_wait(this.handleFor(call), timeoutMs, errBuf, errLen);
    if (status === SMELT_CMD_TIMEOUT) {
      throw new SmeltError(
        `${call}: the command buffer did not finish within ${timeoutMs} ms (abandon() gives up on it and loses the device)`,
      );
    }
    this.#settle(call, status);
  }

  /**
   * Gives up on a committed command buffer that has not finished, typically after wait(ms) timed
   * out on a kernel that never returns. A running kernel cannot be stopped, so the device becomes
   * lost: every later call on it throws the returned text, dispose() returns without waiting, and
   * sm.device() opens a fresh device. Returns undefined when the command buffer had finished.
   */
  abandon(): string | undefined {
    const call = "abandon";
    const cmd = this.handleFor(call);
    if (this.#state === "recording") throw new SmeltError(`${call}: the command buffer was not committed`);
    if (this.#state !== "committed") return undefined;
    clearErr();
    if (this.core.native.smelt_cmd_abandon(cmd, errBuf, errLen) === SMELT_OK) return undefined;
    const text = errText();
    this.core.markLost(text);
    this.#failure = text;
    this.#state = "failed";
    this.releaseNative();
    return text;
  }

  /** Resolves when the device finished the command buffer; rejects when it failed. */
  async completed(): Promise<void> {
    const call = "completed";
    if (!this.#awaitable(call)) return;
    const sequence = this.#sequence;
    for (let polls = 0; this.core.completedCount() < sequence; polls++) {
      await Bun.sleep(polls < EAGER_POLLS ? 0 : 1);
      if (this.#state !== "committed" || this.disposed) break;
    }
    // Another caller (wait, dispose, a second completed()) may have settled it while this one slept.
    if (!this.#awaitable(call)) return;
    clearErr();
    const status = this.core.native.smelt_cmd_status(this.handleFor(call), errBuf, errLen);
    this.#settle(call, status);
  }

  /** False when the command buffer already completed; throws when it cannot complete. */
  #awaitable(call: string): boolean {
    this.core.check(call);
    if (this.disposed) throw new SmeltError(`${call}: the command buffer was disposed`);
    switch (this.#state) {
      case "recording":
        throw new SmeltError(`${call}: the command buffer was not committed; call commit() first`);
      case "completed":
        return false;
      case "failed":
        throw new SmeltError(`${call}: ${this.#failure}`);
      default:
        return true;
    }
  }

  #settle(call: string, status: number): void {
    if (status === SMELT_CMD_COMPLETED) {
      this.#state = "completed";
      // Nothing more is asked of the native object once it finished, so its pins go now rather
      // than at dispose(), and buffers disposed meanwhile are freed.
      this.releaseNative();
      return;
    }
    if (status < 0) {
      this.#failure = `the command buffer failed: ${this.#lostCheck(errText())}`;
      this.#state = "failed";
      this.releaseNative();
      throw new SmeltError(`${call}: ${this.#failure}`);
    }
    // Backends set a command buffer's final status before its sequence reaches the counter.
    throw new SmeltError(`${call}: the backend reported status ${status} for a command buffer it had finished`);
  }

  /** The native handle, when the command buffer still takes dispatches. */
  #recording(call: string): Pointer {
    const cmd = this.handleFor(call);
    if (this.#state === "recording") return cmd;
    if (this.#state === "failed") throw new SmeltError(`${call}: ${this.#failure}`);
    const what = call === "commit" ? "commit may be called only once" : "create a new command buffer";
    throw new SmeltError(`${call}: the command buffer was already committed; ${what}`);
  }

  #fail(call: string, text: string): never {
    this.#failure = text;
    this.#state = "failed";
    this.releaseNative();
    throw new SmeltError(`${call}: ${text}`);
  }

  #flushIfFull(call: string): void {
    if (this.#stream.count >= BATCH_RECORDS) this.#flush(call);
  }

  #flush(call: string): void {
    const stream = this.#stream;
    if (stream.count === 0) return;
    const bytes = stream.bytes;
    clearErr();
    const rc = this.core.native.smelt_cmd_encode(this.handleFor(call), bytes, bytes.byteLength, errBuf, errLen);
    stream.reset();
    if (rc !== 0) this.#fail(call, `encoding the batched dispatches failed: ${this.#lostCheck(errText())}`);
  }

  /**
   * A backend that can take no more work on the device (an abandoned kernel; on Metal, a failed
   * command buffer, after which passes could wait forever on its fence) says "device lost:";
   * the device is then lost here too, so that sm.device() opens a new one.
   */
  #lostCheck(text: string): string {
    if (text.startsWith("device lost:")) this.core.markLost(text);
    return text;
  }

  #dispatch(
    method: string,
    kind: typeof REC_DISPATCH_THREADS | typeof REC_DISPATCH_THREADGROUPS,
    pipeline: Pipeline,
    options: DispatchCommon,
    size: Dims | undefined,
    sizeName: string,
  ): void {
    const call = `${method}(${pipeline instanceof Pipeline ? pipeline.name : "?"})`;
    const cmd = this.#recording(call);
    if (!(pipeline instanceof Pipeline)) throw new SmeltError(`${call}: the first argument must be a Pipeline, got ${describe(pipeline)}`);
    const pipe = pipeline.handleFor(call);
    if (pipeline.device !== this.device) throw new SmeltError(`${call}: the pipeline belongs to another device`);
    if (typeof options !== "object" || options === null) {
      throw new SmeltError(`${call}: options must be an object with args, ${sizeName} and threadgroup`);
    }
    const grid = dims(call, sizeName, size);
    const threadgroup = dims(call, "threadgroup", options.threadgroup);
    const threads = threadgroup[0] * threadgroup[1] * threadgroup[2];
    if (threads > pipeline.maxThreadsPerThreadgroup) {
      throw new SmeltError(
        `${call}: threadgroup [${threadgroup.join(", ")}] has ${threads} threads, more than the pipeline's ` +
          `maxThreadsPerThreadgroup of ${pipeline.maxThreadsPerThreadgroup}`,
      );
    }
    const tgmem = this.#threadgroupMemory(call, pipeline, options.threadgroupMemory);
    const bindings = this.#bindings(call, pipeline, options.args);
    // Pin before the records leave JS: a buffer disposed before the device is done stays allocated.
    this.core.depend(cmd, pipe);
    for (const b of bindings) if (b.kind === BIND_BUFFER) this.core.depend(cmd, b.buffer);
    this.#stream.dispatch(kind, pipe, grid, threadgroup, bindings, tgmem);
    this.#flushIfFull(call);
  }

  #threadgroupMemory(call: string, pipeline: Pipeline, given: readonly number[] | undefined): number[] {
    const mask = pipeline.threadgroupMask;
    const lengths = given ?? [];
    if (!Array.isArray(lengths)) throw new SmeltError(`${call}: threadgroupMemory must be an array of byte lengths`);
    if (lengths.length > MAX_THREADGROUP_SLOTS) throw new SmeltError(`${call}: ${tooManyThreadgroupSlots(lengths.length)}`);
    let total = pipeline.staticThreadgroupMemory;
    for (let i = 0; i < lengths.length; i++) {
      const len = lengths[i];
      const declared = (mask >>> i) & 1;
      if (!declared) {
        throw new SmeltError(
          `${call}: threadgroupMemory has ${lengths.length} entries, but kernel "${pipeline.name}" has no ` +
            `[[threadgroup(${i})]] argument (it has ${slotList(mask, "threadgroup")})`,
        );
      }
      if (typeof len !== "number" || !Number.isInteger(len) || len <= 0) {
        throw new SmeltError(`${call}: threadgroupMemory[${i}] must be a positive integer byte length, got ${String(len)}`);
      }
      // Metal allocates threadgroup memory in 16-byte units, so the limit applies to rounded lengths.
      total += Math.ceil(len / 16) * 16;
    }
    for (let i = lengths.length; i < MAX_THREADGROUP_SLOTS; i++) {
      if ((mask >>> i) & 1) {
        throw new SmeltError(
          `${call}: kernel "${pipeline.name}" has a [[threadgroup(${i})]] argument, but threadgroupMemory[${i}] is missing ` +
            `(expected ${highestSlot(mask) + 1} entries, got ${lengths.length})`,
        );
      }
    }
    const limit = this.device.limits.maxThreadgroupMemory;
    if (total > limit) {
      throw new SmeltError(
        `${call}: threadgroup memory totals ${total} bytes (${pipeline.staticThreadgroupMemory} declared in the kernel ` +
          `+ threadgroupMemory [${lengths.join(", ")}]), over the device limit of ${limit}`,
      );
    }
    return lengths.slice();
  }

  #bindings(call: string, pipeline: Pipeline, args: readonly DispatchArg[] | undefined): Binding[] {
    if (!Array.isArray(args)) throw new SmeltError(`${call}: args must be an array (args[i] binds [[buffer(i)]])`);
    const mask = pipeline.bufferMask;
    const expected = highestSlot(mask) + 1;
    const countHint = () =>
      `kernel "${pipeline.name}" takes ${expected} args (${slotList(mask, "buffer")}), got ${args.length}`;
    if (args.length > MAX_BUFFER_SLOTS) {
      throw new SmeltError(`${call}: at most ${MAX_BUFFER_SLOTS} buffer slots exist; ${countHint()}`);
    }
    const bindings: Binding[] = [];
    for (let i = 0; i < Math.max(args.length, expected); i++) {
      const arg = args[i];
      const declared = ((mask >>> i) & 1) === 1;
      if (arg === undefined || arg === null) {
        if (declared) throw new SmeltError(`${call}: [[buffer(${i})]] has no argument; ${countHint()}`);
        continue;
      }
      if (!declared) throw new SmeltError(`${call}: args[${i}] is extra, there is no [[buffer(${i})]]; ${countHint()}`);
      bindings.push(this.#binding(call, i, arg));
    }
    return bindings;
  }

  #binding(call: string, index: number, arg: NonNullable<DispatchArg>): Binding {
    if (arg instanceof DeviceBuffer) {
      return { index, kind: BIND_BUFFER, buffer: this.#bufferHandle(call, index, arg), offset: 0 };
    }
    if (ArrayBuffer.isView(arg) || arg instanceof ArrayBuffer) {
      const data = ArrayBuffer.isView(arg)
        ? new Uint8Array(arg.buffer, arg.byteOffset, arg.byteLength)
        : new Uint8Array(arg);
      if (data.byteLength === 0 || data.byteLength > MAX_BYTES_BINDING) {
        throw new SmeltError(
          `${call}: args[${index}] is ${data.byteLength} bytes of constant data; constant bytes must be 1 to ` +
            `${MAX_BYTES_BINDING} bytes (put larger data in a device buffer)`,
        );
      }
      return { index, kind: BIND_BYTES, data };
    }
    if (typeof arg === "object" && "buffer" in arg && arg.buffer instanceof DeviceBuffer) {
      const buffer = this.#bufferHandle(call, index, arg.buffer);
      const offset = (arg as { offset?: unknown }).offset;
      if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0 || offset > arg.buffer.byteLength) {
        throw new SmeltError(
          `${call}: args[${index}].offset must be an integer from 0 to the buffer's byteLength ` +
            `(${arg.buffer.byteLength}), got ${String(offset)}`,
        );
      }
      return { index, kind: BIND_BUFFER, buffer, offset };
    }
    throw new SmeltError(
      `${call}: args[${index}] must be a DeviceBuffer, { buffer, offset }, or a typed array, ArrayBuffer or ` +
        `DataView of constant bytes, got ${describe(arg)}`,
    );
  }

  #bufferHandle(call: string, index: number, buffer: DeviceBuffer): Pointer {
    if (buffer.device !== this.device) throw new SmeltError(`${call}: args[${index}] is a buffer from another device`);
    if (buffer.disposed) throw new SmeltError(`${call}: args[${index}]: the buffer was disposed`);
    return buffer.handleFor(call);
  }

  protected override onDispose(): void {
    this.#stream.reset();
  }
}

function dims(call: string, what: string, value: Dims | undefined): [number, number, number] {
  if (!Array.isArray(value) || value.length < 1 || value.length > 3) {
    throw new SmeltError(`${call}: ${what} must be an array of 1 to 3 positive integers, got ${describe(value)}`);
  }
  const out: [number, number, number] = [1, 1, 1];
  value.forEach((n: unknown, i: number) => {
    if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_DIM) {
      const reason = n === 0 ? "is 0 (an empty dispatch)" : `is ${describe(n)}, not a positive integer`;
      throw new SmeltError(`${call}: ${what}[${i}] ${reason}; ${what} is [${value.join(", ")}]`);
    }
    out[i] = n;
  });
  return out;
}

function highestSlot(mask: number): number {
  return mask === 0 ? -1 : 31 - Math.clz32(mask);
}

/** "[[buffer(0)]]..[[buffer(3)]]" style list of the slots a mask declares. */
function slotList(mask: number, kind: "buffer" | "threadgroup"): string {
  const slots: number[] = [];
  for (let i = 0; i < 32; i++) if ((mask >>> i) & 1) slots.push(i);
  if (slots.length === 0) return `no [[${kind}(i)]] arguments`;
  const contiguous = slots[slots.length - 1]! - slots[0]! === slots.length - 1;
  if (contiguous && slots.length > 2) return `[[${kind}(${slots[0]})]]..[[${kind}(${slots[slots.length - 1]})]]`;
  return slots.map((i) => `[[${kind}(${i})]]`).join(", ");
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `[${value.map(describe).join(", ")}]`;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}
