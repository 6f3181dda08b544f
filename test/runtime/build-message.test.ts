/**
 * The first import of a checkout without a native library builds it; the note it prints names
 * the command really run (which may be `python3 -m ziglang build`, not `zig build`).
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

setDefaultTimeout(60_000);

const root = resolve(import.meta.dir, "..", "..");

// SMELT_PREBUILT=1 says the library was built elsewhere and must not be built here (the GPU
// machine, which has no Zig): there is no build, so no note.
const prebuilt = process.env.SMELT_PREBUILT === "1";
if (prebuilt) console.log("build-message.test.ts: SKIPPED: SMELT_PREBUILT=1, this machine never builds the library");

test.skipIf(prebuilt)("the build note prints the Zig command actually run", () => {
  const dir = mkdtempSync(join(tmpdir(), "smelt-build-note-"));
  try {
    // A checkout with no zig-out, so loading the host library must build it.
    for (const entry of ["src", "shim", "build.zig", "build.zig.zon"]) cpSync(join(root, entry), join(dir, entry), { recursive: true });
    const fakeZig = join(dir, "fake zig.sh");
    writeFileSync(fakeZig, "#!/bin/sh\necho 'fake zig refuses' >&2\nexit 3\n");
    chmodSync(fakeZig, 0o755);
    const script = `import { loadNative } from ${JSON.stringify(join(dir, "src/runtime/native.ts"))};
try { loadNative("host"); } catch (e) { console.error("ERROR " + e.message); }`;
    const run = Bun.spawnSync({ cmd: [process.execPath, "-e", script], env: { ...process.env, SMELT_ZIG: fakeZig, SMELT_LIBRARY: "" }, stderr: "pipe" });
    const err = run.stderr.toString();
    expect(err).toContain(`building the native host library, once per checkout: \`${fakeZig} build\``);
    expect(err).toContain("fake zig refuses");
    expect(err).toContain("exit code 3");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
