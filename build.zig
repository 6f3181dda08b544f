//! Builds smelt's native backends as shared libraries that src/runtime/native.ts loads with bun:ffi.
//!
//!   zig build                      host backend (libsmelt_host), on Linux and macOS; on Linux also
//!                                  the CUDA backend (libsmelt_cuda) and smelt-cuda-check, which
//!                                  open the NVIDIA driver and NVRTC at run time (docs/cuda.md)
//!   zig build metal                Metal backend (libsmelt_metal.dylib), see docs/metal.md
const std = @import("std");

/// The parts every backend shares (shim/common), in portable C.
const common_sources = [_][]const u8{
    "records.c",
};
const common_flags = [_][]const u8{ "-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden" };

/// What the host and CUDA backends' smelt.h implementations share (shim/common), in C++.
const common_abi_sources = [_][]const u8{
    "abi_common.cpp",
};

const host_sources = [_][]const u8{
    "abi.cpp",
    "compiler.cpp",
    "executor.cpp",
    "fault.cpp",
    "fiber.cpp",
    "translate.cpp",
};

const translate_sources = [_][]const u8{
    "msl_front.cpp",
    "msl_rewrite.cpp",
};

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    // Release by default: the first `import "smelt"` runs a plain `zig build`.
    const optimize = b.option(std.builtin.OptimizeMode, "optimize", "Optimization mode (default: ReleaseFast)") orelse .ReleaseFast;

    const host_mod = b.createModule(.{
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .link_libcpp = true,
    });
    host_mod.addIncludePath(b.path("shim/include"));
    host_mod.addIncludePath(b.path("shim/translate"));
    const host_flags = [_][]const u8{ "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-fno-exceptions" };
    host_mod.addCSourceFiles(.{ .root = b.path("shim/host"), .files = &host_sources, .flags = &host_flags });
    // The MSL front end, shared with any other backend that translates MSL.
    host_mod.addCSourceFiles(.{ .root = b.path("shim/translate"), .files = &translate_sources, .flags = &host_flags });
    host_mod.addCSourceFiles(.{ .root = b.path("shim/common"), .files = &common_sources, .flags = &common_flags });
    host_mod.addCSourceFiles(.{ .root = b.path("shim/common"), .files = &common_abi_sources, .flags = &host_flags });
    const host = b.addLibrary(.{ .linkage = .dynamic, .name = "smelt_host", .root_module = host_mod });
    // Export exactly the smelt.h functions, not the statically linked C++ runtime's symbols.
    if (target.result.os.tag != .macos) host.setVersionScript(b.path("shim/host/exports.map"));
    b.installArtifact(host);

    if (target.result.os.tag == .linux) addCuda(b, target, optimize, &host_flags);

    // The Metal backend's steps follow (see docs/metal.md).
    const metal_step = b.step("metal", "Build the Metal backend (zig-out/lib/libsmelt_metal.dylib)");
    const macos_sdk = b.option(
        []const u8,
        "macos-sdk",
        "macOS SDK root (e.g. a MacOSX13.3.sdk tree) to cross-build the Metal backend from another OS",
    );
    addMetal(b, metal_step, macos_sdk, optimize);
}

const cuda_sources = [_][]const u8{
    "compile.cpp",
    "loader.cpp",
    "translate_cuda.cpp",
};

/// The CUDA backend needs no CUDA toolkit to build: the driver and NVRTC are opened with dlopen.
fn addCuda(b: *std.Build, target: std.Build.ResolvedTarget, optimize: std.builtin.OptimizeMode, flags: []const []const u8) void {
    const mod = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true, .link_libcpp = true });
    mod.addIncludePath(b.path("shim/include"));
    mod.addIncludePath(b.path("shim/translate"));
    mod.addCSourceFiles(.{ .root = b.path("shim/cuda"), .files = &(cuda_sources ++ [_][]const u8{"abi.cpp"}), .flags = flags });
    mod.addCSourceFiles(.{ .root = b.path("shim/translate"), .files = &translate_sources, .flags = flags });
    mod.addCSourceFiles(.{ .root = b.path("shim/common"), .files = &common_sources, .flags = &common_flags });
    mod.addCSourceFiles(.{ .root = b.path("shim/common"), .files = &common_abi_sources, .flags = flags });
    const lib = b.addLibrary(.{ .linkage = .dynamic, .name = "smelt_cuda", .root_module = mod });
    lib.setVersionScript(b.path("shim/host/exports.map"));
    b.installArtifact(lib);

    // The offline check of scripts/check-cuda.sh: MSL through the same translator and NVRTC.
    const check_mod = b.createModule(.{ .target = target, .optimize = optimize, .link_libc = true, .link_libcpp = true });
    check_mod.addIncludePath(b.path("shim/translate"));
    check_mod.addCSourceFiles(.{ .root = b.path("shim/cuda"), .files = &(cuda_sources ++ [_][]const u8{"check.cpp"}), .flags = flags });
    check_mod.addCSourceFiles(.{ .root = b.path("shim/translate"), .files = &translate_sources, .flags = flags });
    const check = b.addExecutable(.{ .name = "smelt-cuda-check", .root_module = check_mod });
    b.installArtifact(check);
}

const metal_sources = [_][]const u8{
    "buffer.m",
    "command.m",
    "device.m",
    "library.m",
    "text.m",
};

/// Shared C that only the Metal backend links: its small-buffer slabs (test/host/slabs.test.ts
/// builds the same file on any OS).
const metal_common_sources = [_][]const u8{
    "slab.c",
};

const metal_flags = [_][]const u8{ "-fobjc-arc", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden" };

/// macOS 13 is the oldest system smelt supports (MSL 3.0, MTLBinding reflection); the target
/// says so explicitly rather than taking the build machine's version.
const metal_min_macos: std.SemanticVersion = .{ .major = 13, .minor = 0, .patch = 0 };

fn addMetal(b: *std.Build, step: *std.Build.Step, sdk_option: ?[]const u8, optimize: std.builtin.OptimizeMode) void {
    const on_mac = b.graph.host.result.os.tag == .macos;
    const sdk = sdk_option orelse if (on_mac) xcodeSdk(b) else null;
    const sdk_root = sdk orelse {
        const why = if (on_mac)
            "zig build metal: `xcrun --sdk macosx --show-sdk-path` found no SDK; install the Xcode command line tools or pass -Dmacos-sdk=PATH"
        else
            "zig build metal: not on macOS; pass -Dmacos-sdk=PATH (a macOS SDK tree) to cross-build, see docs/metal.md";
        step.dependOn(&b.addFail(why).step);
        return;
    };

    const target = b.resolveTargetQuery(.{
        // A Mac builds for itself; from elsewhere the target is Apple silicon.
        .cpu_arch = if (on_mac) b.graph.host.result.cpu.arch else .aarch64,
        .os_tag = .macos,
        .os_version_min = .{ .semver = metal_min_macos },
    });
    const mod = b.createModule(.{
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        // UBSan's runtime would be linked into the dylib in Debug builds; keep it out.
        .sanitize_c = .off,
    });
    mod.addIncludePath(b.path("shim/include"));
    // SDK headers are system headers, so -Werror applies to smelt's code only.
    mod.addSystemIncludePath(.{ .cwd_relative = b.pathJoin(&.{ sdk_root, "usr", "include" }) });
    mod.addSystemFrameworkPath(.{ .cwd_relative = b.pathJoin(&.{ sdk_root, "System", "Library", "Frameworks" }) });
    mod.addLibraryPath(.{ .cwd_relative = b.pathJoin(&.{ sdk_root, "usr", "lib" }) });

    var flags: std.ArrayList([]const u8) = .empty;
    flags.appendSlice(b.allocator, &metal_flags) catch @panic("OOM");
    flags.appendSlice(b.allocator, &.{ "-isysroot", sdk_root }) catch @panic("OOM");
    mod.addCSourceFiles(.{
        .root = b.path("shim/metal"),
        .files = &metal_sources,
        .flags = flags.items,
        .language = .objective_c,
    });
    var c_flags: std.ArrayList([]const u8) = .empty;
    c_flags.appendSlice(b.allocator, &common_flags) catch @panic("OOM");
    c_flags.appendSlice(b.allocator, &.{ "-isysroot", sdk_root }) catch @panic("OOM");
    mod.addCSourceFiles(.{
        .root = b.path("shim/common"),
        .files = &(common_sources ++ metal_common_sources),
        .flags = c_flags.items,
        .language = .c,
    });
    mod.linkFramework("Metal", .{});
    mod.linkFramework("Foundation", .{});
    // MTLCreateSystemDefaultDevice returns nil in processes without CoreGraphics loaded (Apple's
    // documentation says command line tools must link it); bun is such a process.
    mod.linkFramework("CoreGraphics", .{});
    mod.linkSystemLibrary("objc", .{});

    const lib = b.addLibrary(.{ .linkage = .dynamic, .name = "smelt_metal", .root_module = mod });
    step.dependOn(&b.addInstallArtifact(lib, .{}).step);
}

fn xcodeSdk(b: *std.Build) ?[]const u8 {
    var code: u8 = undefined;
    // Without developer tools, xcrun would open an install dialog on every `zig build`;
    // xcode-select -p only reports whether they are there.
    _ = b.runAllowFail(&.{ "xcode-select", "-p" }, &code, .Ignore) catch return null;
    const out = b.runAllowFail(&.{ "xcrun", "--sdk", "macosx", "--show-sdk-path" }, &code, .Ignore) catch return null;
    const path = std.mem.trim(u8, out, " \t\r\n");
    return if (path.len == 0) null else path;
}
