/*
 * text.m: the C-string edges of the ABI: messages written into caller-owned buffers, and the
 * "key=value;key=value" option strings of smelt_device_open and smelt_library_new.
 */
#import "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void smelt_err(char* err, size_t errlen, const char* fmt, ...) {
  if (err == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int smelt_copy_text(char* out, size_t outlen, const char* text) {
  if (out == NULL || outlen == 0) return -1;
  size_t n = strlen(text);
  if (n < outlen) {
    memcpy(out, text, n + 1);
    return 0;
  }
  memcpy(out, text, outlen - 1);
  out[outlen - 1] = '\0';
  return -1;
}

char* smelt_strdup_ns(NSString* text) {
  const char* utf8 = text != nil ? text.UTF8String : NULL;
  char* copy = strdup(utf8 != NULL ? utf8 : "(no description)");
  /* Out of memory while reporting an error: keep a fixed message rather than lose the error. */
  return copy != NULL ? copy : strdup("out of memory");
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void trim(const char** s, size_t* n) {
  while (*n > 0 && is_space(**s)) {
    (*s)++;
    (*n)--;
  }
  while (*n > 0 && is_space((*s)[*n - 1])) (*n)--;
}

int smelt_options_walk(const char* options, smelt_option_fn fn, void* ctx, char* err, size_t errlen) {
  if (options == NULL) return 0;
  const char* p = options;
  while (*p != '\0') {
    const char* end = strchr(p, ';');
    size_t seglen = end != NULL ? (size_t)(end - p) : strlen(p);
    const char* seg = p;
    size_t n = seglen;
    trim(&seg, &n);
    if (n > 0) {
      const char* eq = memchr(seg, '=', n);
      if (eq == NULL) {
        smelt_err(err, errlen, "option '%.*s' has no value (options are key=value;key=value)", (int)n, seg);
        return -1;
      }
      const char* key = seg;
      size_t keylen = (size_t)(eq - seg);
      const char* value = eq + 1;
      size_t valuelen = n - keylen - 1;
      trim(&key, &keylen);
      trim(&value, &valuelen);
      int rc = fn(ctx, key, keylen, value, valuelen, err, errlen);
      if (rc != 0) return rc;
    }
    if (end == NULL) break;
    p = end + 1;
  }
  return 0;
}

int smelt_key_is(const char* key, size_t keylen, const char* name) {
  return strlen(name) == keylen && memcmp(key, name, keylen) == 0;
}

int smelt_parse_u64(const char* value, size_t valuelen, uint64_t* out) {
  if (valuelen == 0 || valuelen > 19) return -1; /* 19 digits always fit in 64 bits */
  uint64_t v = 0;
  for (size_t i = 0; i < valuelen; i++) {
    if (value[i] < '0' || value[i] > '9') return -1;
    v = v * 10 + (uint64_t)(value[i] - '0');
  }
  *out = v;
  return 0;
}
