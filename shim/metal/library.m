/*
 * library.m: libraries compiled from MSL source, and compute pipelines made from their kernels,
 * cached per library and function name, with what reflection says about their arguments.
 */
#import "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

@implementation SmeltLibrary
@end

@implementation SmeltPipelineState
@end

@implementation SmeltPipeline
@end

typedef struct library_options {
  BOOL fast_math;
  unsigned minor; /* MSL 3.minor; 0 until the options name one, then 0 or 1 */
  BOOL version_given;
} library_options;

static int parse_library_option(void* ctx, const char* key, size_t keylen, const char* value, size_t valuelen,
                                char* err, size_t errlen) {
  library_options* o = ctx;
  if (smelt_key_is(key, keylen, "fast_math")) {
    uint64_t v;
    if (smelt_parse_u64(value, valuelen, &v) != 0 || v > 1) {
      smelt_err(err, errlen, "library option fast_math=%.*s: expected 0 or 1", (int)valuelen, value);
      return -1;
    }
    o->fast_math = v == 1 ? YES : NO;
    return 0;
  }
  if (smelt_key_is(key, keylen, "msl")) {
    if (valuelen == 3 && memcmp(value, "3.0", 3) == 0) o->minor = 0;
    else if (valuelen == 3 && memcmp(value, "3.1", 3) == 0) o->minor = 1;
    else {
      smelt_err(err, errlen, "library option msl=%.*s: expected 3.0 or 3.1", (int)valuelen, value);
      return -1;
    }
    o->version_given = YES;
    return 0;
  }
  smelt_err(err, errlen, "unknown library option '%.*s' (known: fast_math, msl)", (int)keylen, key);
  return -1;
}

/* What smelt_library_new and smelt_library_new_async share: the checks of their arguments, the
 * source as an NSString and Metal's compile options. Returns nil with err on bad arguments. */
static NSString* compile_request(SmeltDevice* dev, const char* source, size_t source_len, const char* options,
                                 MTLCompileOptions** out, char* err, size_t errlen) {
  if (source == NULL && source_len > 0) {
    smelt_err(err, errlen, "smelt_library_new: source is NULL");
    return nil;
  }
  if (smelt_device_lost(dev, err, errlen)) return nil;
  library_options o = {NO, 0, NO};
  if (smelt_options_walk(options, parse_library_option, &o, err, errlen) != 0) return nil;
  NSString* text = [[NSString alloc] initWithBytes:source != NULL ? source : ""
                                           length:source_len
                                         encoding:NSUTF8StringEncoding];
  if (text == nil) {
    smelt_err(err, errlen, "smelt_library_new: the MSL source is not valid UTF-8");
    return nil;
  }
  MTLCompileOptions* compile = [MTLCompileOptions new];
  /* Stated rather than left to the SDK's default. MSL 3.1 (macOS 14) is the first with
   * bfloat, which smelt's bfloat16 kernels need; macOS 13 gets 3.0 and bfloat kernels fail to
   * compile there with Metal's message. The 13.3 SDK has no name for 3.1: (3 << 16) | 1. */
  BOOL has31 = NO;
  if (@available(macOS 14.0, *)) has31 = YES;
  if (o.version_given && o.minor == 1 && !has31) {
    smelt_err(err, errlen, "library option msl=3.1: this macOS offers MSL 3.0 only (3.1 needs macOS 14)");
    return nil;
  }
  BOOL use31 = o.version_given ? o.minor == 1 : has31;
  compile.languageVersion = use31 ? (MTLLanguageVersion)((3u << 16) | 1u) : MTLLanguageVersion3_0;
  /* Metal's default is fast math on; smelt wants IEEE results unless asked. */
  compile.fastMathEnabled = o.fast_math;
  *out = compile;
  return text;
}

/* Where the binary archive of a library compiled from this source with these options lives, or
 * nil without a cache directory. The name is a 64-bit FNV-1a hash of the device's salt (its
 * name and the OS version), the options and the source: a collision costs only a missed
 * archive, since Metal takes nothing from an archive that was not compiled from the same code. */
static NSString* archive_path_for(SmeltDevice* dev, const char* source, size_t source_len, const char* options) {
  if (dev->archive_dir == nil) return nil;
  uint64_t h = 14695981039346656037ull;
  const char* salt = dev->archive_salt.UTF8String;
  const char* parts[3] = {salt != NULL ? salt : "", options != NULL ? options : "", source != NULL ? source : ""};
  size_t lens[3] = {strlen(parts[0]), strlen(parts[1]), source != NULL ? source_len : 0};
  for (int p = 0; p < 3; p++) {
    for (size_t i = 0; i < lens[p]; i++) h = (h ^ (uint8_t)parts[p][i]) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull; /* a byte no UTF-8 text has, between the parts */
  }
  return [dev->archive_dir stringByAppendingPathComponent:[NSString stringWithFormat:@"%016llx.binarchive",
                                                                                     (unsigned long long)h]];
}

/* The compiler's log, with program_source:LINE:COLUMN for each diagnostic (malloc'd). */
static char* compile_log(NSError* error) {
  NSString* log = error.localizedDescription;
  return smelt_strdup_ns(log != nil ? log : @"MSL compilation failed with no message");
}

static smelt_library* library_handle(SmeltDevice* dev, id<MTLLibrary> mtl, NSString* archive_path) {
  SmeltLibrary* lib = [SmeltLibrary new];
  lib->device = dev;
  lib->mtl = mtl;
  lib->archive_path = archive_path;
  lib->pipelines = [NSMutableDictionary dictionary];
  smelt_count_add(&dev->core->n_compiles, 1);
  smelt_count_add(&dev->core->n_libraries, 1);
  return (__bridge_retained smelt_library*)lib;
}

SMELT_API smelt_library* smelt_library_new(smelt_device* handle, const char* source, size_t source_len,
                                           const char* options, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_library_new: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    MTLCompileOptions* compile = nil;
    NSString* text = compile_request(dev, source, source_len, options, &compile, err, errlen);
    if (text == nil) return NULL;
    NSError* error = nil;
    id<MTLLibrary> mtl = [dev->mtl newLibraryWithSource:text options:compile error:&error];
    if (mtl == nil) {
      char* log = compile_log(error);
      smelt_copy_text(err, errlen, log);
      free(log);
      return NULL;
    }
    return library_handle(dev, mtl, archive_path_for(dev, source, source_len, options));
  }
}

@implementation SmeltCompileJob
@end

SMELT_API smelt_compile* smelt_library_new_async(smelt_device* handle, const char* source, size_t source_len,
                                                 const char* options, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) {
      smelt_err(err, errlen, "smelt_library_new_async: no device");
      return NULL;
    }
    SmeltDevice* dev = (__bridge SmeltDevice*)(void*)handle;
    MTLCompileOptions* compile = nil;
    NSString* text = compile_request(dev, source, source_len, options, &compile, err, errlen);
    if (text == nil) return NULL;
    SmeltCompileJob* job = [SmeltCompileJob new];
    job->device = dev;
    job->archive_path = archive_path_for(dev, source, source_len, options);
    /* The handler runs on a thread Metal owns and only fills the job; JS polls it. */
    [dev->mtl newLibraryWithSource:text
                           options:compile
                 completionHandler:^(id<MTLLibrary> library, NSError* error) {
                   char* log = library == nil ? compile_log(error) : NULL;
                   pthread_mutex_lock(&job->lock);
                   job->library = library;
                   job->error = log;
                   __atomic_store_n(&job->done, 1, __ATOMIC_RELEASE);
                   pthread_cond_broadcast(&job->cond);
                   pthread_mutex_unlock(&job->lock);
                 }];
    return (__bridge_retained smelt_compile*)job;
  }
}

SMELT_API int smelt_compile_done(smelt_compile* handle) {
  if (handle == NULL) return 0;
  SmeltCompileJob* job = (__bridge SmeltCompileJob*)(void*)handle;
  return __atomic_load_n(&job->done, __ATOMIC_ACQUIRE) ? 1 : 0;
}

SMELT_API smelt_library* smelt_compile_finish(smelt_compile* handle, char* err, size_t errlen) {
  @autoreleasepool {
    if (handle == NULL) return NULL;
    SmeltCompileJob* job = (__bridge_transfer SmeltCompileJob*)(void*)handle;
    pthread_mutex_lock(&job->lock);
    while (!job->done) pthread_cond_wait(&job->cond, &job->lock);
    pthread_mutex_unlock(&job->lock);
    if (job->library == nil) {
      smelt_copy_text(err, errlen, job->error != NULL ? job->error : "MSL compilation failed with no message");
      return NULL;
    }
    return library_handle(job->device, job->library, job->archive_path);
  }
}

SMELT_API void smelt_library_free(smelt_library* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    SmeltLibrary* lib = (__bridge_transfer SmeltLibrary*)(void*)handle;
    smelt_count_sub(&lib->device->core->n_libraries, 1);
    /* Pipelines made from it hold it until they are freed. */
  }
}

static NSString* function_list(id<MTLLibrary> lib) {
  NSArray<NSString*>* names = [lib.functionNames sortedArrayUsingSelector:@selector(compare:)];
  return names.count > 0 ? [names componentsJoinedByString:@", "] : @"none";
}

/* Fills masks and alignments from reflection; returns 0, or -1 with err for an argument that
 * the ABI cannot bind. */
static int read_bindings(SmeltPipelineState* st, NSArray<id<MTLBinding>>* bindings, char* err, size_t errlen) {
  for (id<MTLBinding> b in bindings) {
    NSUInteger index = b.index;
    switch (b.type) {
      case MTLBindingTypeBuffer: {
        if (index >= SMELT_MAX_BUFFER_SLOTS) {
          smelt_err(err, errlen, "kernel %s: argument '%s' is [[buffer(%lu)]]; Metal has %u buffer slots (0..%u)",
                    st->function_name.UTF8String, b.name.UTF8String, (unsigned long)index, SMELT_MAX_BUFFER_SLOTS,
                    SMELT_MAX_BUFFER_SLOTS - 1);
          return -1;
        }
        st->info.buffer_mask |= 1u << index;
        if (b.used) st->used_buffer_mask |= 1u << index;
        /* `device const` and `constant` arguments are read-only: a dispatch waits only for the
         * last writer of such a buffer, not for its other readers (command.m). */
        if (b.access != MTLArgumentAccessReadOnly) st->written_buffer_mask |= 1u << index;
        if ([b conformsToProtocol:@protocol(MTLBufferBinding)]) {
          NSUInteger align = ((id<MTLBufferBinding>)b).bufferAlignment;
          st->buffer_alignment[index] = align > 0 && align <= 4096 ? (uint32_t)align : 1u;
        }
        break;
      }
      case MTLBindingTypeThreadgroupMemory:
        if (index >= SMELT_MAX_THREADGROUP_SLOTS) {
          smelt_err(err, errlen,
                    "kernel %s: argument '%s' is [[threadgroup(%lu)]]; Metal has %u threadgroup memory slots (0..%u)",
                    st->function_name.UTF8String, b.name.UTF8String, (unsigned long)index,
                    SMELT_MAX_THREADGROUP_SLOTS, SMELT_MAX_THREADGROUP_SLOTS - 1);
          return -1;
        }
        st->info.threadgroup_mask |= 1u << index;
        if (b.used) st->used_threadgroup_mask |= 1u << index;
        break;
      default:
        smelt_err(err, errlen,
                  "kernel %s: argument '%s' is neither a buffer nor threadgroup memory (Metal binding type %ld); "
                  "smelt binds only those",
                  st->function_name.UTF8String, b.name.UTF8String, (long)b.type);
        return -1;
    }
  }
  return 0;
}

/* Reflection of the kernel's bindings. The macOS 13.3 SDK calls this bit
 * MTLPipelineOptionArgumentInfo; later SDKs rename it MTLPipelineOptionBindingInfo and deprecate
 * the old name as of macOS 13, which -Werror would turn into a build failure on a newer Xcode.
 * Neither name compiles cleanly against both SDKs, so the bit is spelled out. */
static const MTLPipelineOption binding_info = (MTLPipelineOption)(1u << 0);

/* The library's binary archive: loaded from its file, or new and empty when there is none or
 * Metal refuses the file (made by another OS or GPU, or damaged). nil without a cache directory,
 * or when Metal makes no archive: pipelines are then compiled every time, as without a cache. */
static id<MTLBinaryArchive> library_archive(SmeltLibrary* lib) {
  if (lib->archive != nil || lib->archive_path == nil) return lib->archive;
  id<MTLDevice> mtl = lib->device->mtl;
  MTLBinaryArchiveDescriptor* desc = [MTLBinaryArchiveDescriptor new];
  if ([NSFileManager.defaultManager fileExistsAtPath:lib->archive_path])
    desc.url = [NSURL fileURLWithPath:lib->archive_path];
  NSError* error = nil;
  lib->archive = [mtl newBinaryArchiveWithDescriptor:desc error:&error];
  if (lib->archive == nil && desc.url != nil) {
    desc.url = nil;
    lib->archive = [mtl newBinaryArchiveWithDescriptor:desc error:&error];
  }
  if (lib->archive == nil) lib->archive_path = nil;
  return lib->archive;
}

/* Adds a pipeline that was compiled to the library's archive and writes the archive out. The
 * cache only saves time, so a failure here leaves the pipeline as it is and says nothing. The
 * file is written under a name of this process and renamed over the old one, so that another
 * process reading the archive finds the old file or the new, never part of one. */
static void archive_add(SmeltLibrary* lib, MTLComputePipelineDescriptor* desc) {
  NSError* error = nil;
  if (![lib->archive addComputePipelineFunctionsWithDescriptor:desc error:&error]) return;
  NSString* dir = lib->archive_path.stringByDeletingLastPathComponent;
  if (![NSFileManager.defaultManager createDirectoryAtPath:dir withIntermediateDirectories:YES attributes:nil error:&error])
    return;
  NSString* tmp = [lib->archive_path stringByAppendingFormat:@".%d.tmp", (int)getpid()];
  if (![lib->archive serializeToURL:[NSURL fileURLWithPath:tmp] error:&error]) {
    unlink(tmp.fileSystemRepresentation);
    return;
  }
  if (rename(tmp.fileSystemRepresentation, lib->archive_path.fileSystemRepresentation) != 0)
    unlink(tmp.fileSystemRepresentation);
}

static SmeltPipelineState* make_state(SmeltLibrary* lib, NSString* name, char* err, size_t errlen) {
  id<MTLFunction> fn = [lib->mtl newFunctionWithName:name];
  if (fn == nil) {
    smelt_err(err, errlen, "no function named '%s' in the library (it has: %s)", name.UTF8String,
              function_list(lib->mtl).UTF8String);
    return nil;
  }
  if (fn.functionType != MTLFunctionTypeKernel) {
    smelt_err(err, errlen, "function '%s' is not a kernel function", name.UTF8String);
    return nil;
  }
  id<MTLDevice> mtl = lib->device->mtl;
  MTLComputePipelineDescriptor* desc = [MTLComputePipelineDescriptor new];
  desc.computeFunction = fn;
  const MTLPipelineOption options = binding_info | MTLPipelineOptionBufferTypeInfo;
  MTLAutoreleasedComputePipelineReflection reflection = nil;
  NSError* error = nil;
  id<MTLComputePipelineState> pso = nil;
  id<MTLBinaryArchive> archive = library_archive(lib);
  if (archive != nil) {
    /* GPU code from the archive only; a miss fails, and the pipeline is compiled below. */
    desc.binaryArchives = @[ archive ];
    pso = [mtl newComputePipelineStateWithDescriptor:desc
                                             options:options | MTLPipelineOptionFailOnBinaryArchiveMiss
                                          reflection:&reflection
                                               error:&error];
  }
  if (pso == nil) {
    error = nil;
    reflection = nil;
    pso = [mtl newComputePipelineStateWithDescriptor:desc options:options reflection:&reflection error:&error];
    if (pso != nil && archive != nil) archive_add(lib, desc);
  }
  if (pso == nil) {
    NSString* text = error.localizedDescription;
    smelt_err(err, errlen, "kernel %s: pipeline creation failed: %s", name.UTF8String,
              text != nil ? text.UTF8String : "no message");
    return nil;
  }

  /* threadExecutionWidth is reported as it is, 32 on every Apple GPU: the engine fits each
   * dispatch to it (a row kernel takes at most width * width threads, so that one SIMD group
   * folds the partials of all; the simdgroup matmul, built for 32, gives way to the dot kernel). */
  SmeltPipelineState* st = [SmeltPipelineState new];
  st->pso = pso;
  st->function_name = [name copy];
  for (uint32_t i = 0; i < SMELT_MAX_BUFFER_SLOTS; i++) st->buffer_alignment[i] = 1;
  st->info.max_threads_per_threadgroup = (uint32_t)pso.maxTotalThreadsPerThreadgroup;
  st->info.thread_execution_width = (uint32_t)pso.threadExecutionWidth;
  st->info.static_threadgroup_memory = (uint32_t)pso.staticThreadgroupMemoryLength;
  if (read_bindings(st, reflection != nil ? reflection.bindings : @[], err, errlen) != 0) return nil;
  return st;
}

SMELT_API smelt_pipeline* smelt_pipeline_new(smelt_library* handle, const char* function_name, char* err,
                                             size_t errlen) {
  @autoreleasepool {
    if (handle == NULL || function_name == NULL) {
      smelt_err(err, errlen, "smelt_pipeline_new: no library or no function name");
      return NULL;
    }
    SmeltLibrary* lib = (__bridge SmeltLibrary*)(void*)handle;
    if (smelt_device_lost(lib->device, err, errlen)) return NULL;
    NSString* name = [NSString stringWithUTF8String:function_name];
    if (name == nil) {
      smelt_err(err, errlen, "smelt_pipeline_new: the function name is not valid UTF-8");
      return NULL;
    }
    SmeltPipelineState* st = lib->pipelines[name];
    if (st == nil) {
      st = make_state(lib, name, err, errlen);
      if (st == nil) return NULL;
      lib->pipelines[name] = st;
    }
    SmeltPipeline* pipe = [SmeltPipeline new];
    pipe->library = lib;
    pipe->state = st;
    SmeltDevice* dev = lib->device;
    smelt_count_add(&dev->core->n_pipelines, 1);
    smelt_pipeline* out = (__bridge_retained smelt_pipeline*)pipe;
    smelt_device_register(dev, out);
    return out;
  }
}

SMELT_API int smelt_pipeline_info_get(smelt_pipeline* handle, smelt_pipeline_info* out) {
  @autoreleasepool {
    if (handle == NULL || out == NULL) return SMELT_ERROR;
    *out = ((__bridge SmeltPipeline*)(void*)handle)->state->info;
    return SMELT_OK;
  }
}

SMELT_API void smelt_pipeline_free(smelt_pipeline* handle) {
  @autoreleasepool {
    if (handle == NULL) return;
    SmeltPipeline* pipe = (__bridge_transfer SmeltPipeline*)(void*)handle;
    SmeltDevice* dev = pipe->library->device;
    /* Command buffers do not retain what they use (command.m); see smelt_buffer_free. */
    [dev->core keepIfLost:pipe->state->pso];
    smelt_device_unregister(dev, handle);
    smelt_count_sub(&dev->core->n_pipelines, 1);
  }
}
