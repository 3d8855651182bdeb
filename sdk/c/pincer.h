/*
 * pincer.h: the C SDK for Pincer plugins (usable from C and, through
 * `zig translate-c`, from Zig).
 *
 * Build with `pincer plugin build`, which defines PINCER_TOOL or
 * PINCER_CHANNEL from the project's pincer.toml and puts this header, the
 * generated bindings (gen/tool_plugin.h or gen/channel_plugin.h, from
 * `wit-bindgen c` for wit/pincer.wit) and pincer.c on the include path.
 *
 * A plugin implements the generated `exports_pincer_plugin_*` functions; this
 * layer makes the host imports (log, key-value, clock, secrets) and errors
 * short to use with C strings. Ownership: strings and bytes a helper returns
 * through an out-parameter are the caller's to free (free() or the
 * pincer_*_free helpers); a string written into an export's `ret` is freed
 * by the generated code after the call, so it must be a heap copy
 * (pincer_string_copy / pincer_return), never a literal.
 */
#ifndef PINCER_H
#define PINCER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(PINCER_CHANNEL)
#include "channel_plugin.h"
typedef channel_plugin_string_t pincer_string_t;
typedef channel_plugin_list_u8_t pincer_bytes_t;
typedef channel_plugin_option_list_u8_t pincer_option_bytes_t;
typedef channel_plugin_tuple2_string_string_t pincer_field_t;
typedef channel_plugin_list_tuple2_string_string_t pincer_fields_t;
#elif defined(PINCER_TOOL)
#include "tool_plugin.h"
typedef tool_plugin_string_t pincer_string_t;
typedef tool_plugin_list_u8_t pincer_bytes_t;
typedef tool_plugin_option_list_u8_t pincer_option_bytes_t;
typedef tool_plugin_tuple2_string_string_t pincer_field_t;
typedef tool_plugin_list_tuple2_string_string_t pincer_fields_t;
#else
#error "define PINCER_TOOL or PINCER_CHANNEL (`pincer plugin build` does, from pincer.toml)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

/* The contract's error (pincer:plugin/types.error). */
typedef pincer_plugin_types_error_t pincer_error_t;

/* Error kinds, as the host classifies them. */
enum {
  PINCER_ERR_CONFIG = PINCER_PLUGIN_TYPES_ERROR_CONFIG,
  PINCER_ERR_AUTH = PINCER_PLUGIN_TYPES_ERROR_AUTH,
  PINCER_ERR_TRANSIENT = PINCER_PLUGIN_TYPES_ERROR_TRANSIENT,
  PINCER_ERR_PERMANENT = PINCER_PLUGIN_TYPES_ERROR_PERMANENT,
  PINCER_ERR_UNSUPPORTED = PINCER_PLUGIN_TYPES_ERROR_UNSUPPORTED,
  PINCER_ERR_FORMATTING = PINCER_PLUGIN_TYPES_ERROR_FORMATTING,
};

/* Fill `err` with an error of `kind` (not rate-limited) and a printf-style
 * message. Returns false, so `return pincer_error(err, ...);` ends an export
 * with that error. */
bool pincer_error(pincer_error_t *err, uint8_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like pincer_error with a fixed message (for callers without varargs, e.g. Zig). */
bool pincer_error_str(pincer_error_t *err, uint8_t kind, const char *message);
/* A rate-limited error: retry after `retry_after_ms`. Returns false. */
bool pincer_error_rate_limited(pincer_error_t *err, uint64_t retry_after_ms, const char *message);
/* The error's message (borrowed; NUL-terminated only if it was made here). */
pincer_string_t pincer_error_message(const pincer_error_t *err);

/* ---- strings ------------------------------------------------------------ */

/* A borrowed view of a C string, for passing to an import. */
pincer_string_t pincer_str(const char *s);
/* A heap copy of `len` bytes of `s` into `out` (what exports must return). */
void pincer_string_copy(pincer_string_t *out, const char *s, size_t len);
/* A heap copy of the C string `s` into `ret`; returns true (for `return
 * pincer_return(ret, "...");` from an export that can fail). */
bool pincer_return(pincer_string_t *ret, const char *s);
/* A malloc'd, NUL-terminated copy of `s` (free() it). NULL if out of memory. */
char *pincer_cstr(const pincer_string_t *s);
/* Free a string the host or a helper returned. */
void pincer_string_free(pincer_string_t *s);

/* ---- log (pincer:plugin/log) -------------------------------------------- */

enum {
  PINCER_TRACE = PINCER_PLUGIN_LOG_LEVEL_TRACE,
  PINCER_DEBUG = PINCER_PLUGIN_LOG_LEVEL_DEBUG,
  PINCER_INFO = PINCER_PLUGIN_LOG_LEVEL_INFO,
  PINCER_WARN = PINCER_PLUGIN_LOG_LEVEL_WARN,
  PINCER_ERROR = PINCER_PLUGIN_LOG_LEVEL_ERROR,
};

/* Write a log line (the host adds the plugin name; rate-limited per plugin). */
void pincer_log(uint8_t level, const char *message);
/* A log line with one key=value field. */
void pincer_log_field(uint8_t level, const char *message, const char *key, const char *value);

/* ---- key-value (pincer:plugin/kv), the plugin's own namespace ------------ */

/* Read `key`: on success sets *found and, when found, `out` (free with
 * pincer_bytes_free). False with `err` filled on a host error. */
bool pincer_kv_get(const char *key, pincer_bytes_t *out, bool *found, pincer_error_t *err);
/* Write `len` bytes of `value` under `key`. */
bool pincer_kv_set(const char *key, const void *value, size_t len, pincer_error_t *err);
/* Delete `key` (no error if it is absent). */
bool pincer_kv_delete(const char *key, pincer_error_t *err);
/* Add `delta` to the integer counter `key` atomically; *out is the new value. */
bool pincer_kv_increment(const char *key, int64_t delta, int64_t *out, pincer_error_t *err);
/* Free bytes returned by pincer_kv_get. */
void pincer_bytes_free(pincer_bytes_t *b);

/* ---- clock and secrets --------------------------------------------------- */

/* The host clock, Unix milliseconds. */
uint64_t pincer_now_ms(void);
/* Whether the operator configured secret `name` for this plugin. */
bool pincer_secret_exists(const char *name);
/* The placeholder for secret `name` (malloc'd C string, free() it): put it in
 * an outgoing wasi:http request header or body and the host substitutes the
 * real value on the way out, for hosts the manifest allows. The plugin never
 * sees the secret. */
char *pincer_secret_placeholder(const char *name);

/* ---- outgoing HTTP (wasi:http) ------------------------------------------ */

/* One request header. */
typedef struct {
  const char *name;
  const char *value;
} pincer_header_t;

/* A response: its status and its whole body (free with pincer_http_response_free). */
typedef struct {
  uint16_t status;
  pincer_bytes_t body;
} pincer_http_response_t;

/* Largest response body pincer_http_request reads (bigger ones are an error). */
#define PINCER_HTTP_MAX_BODY (8u << 20)

/* Send `method` (e.g. "GET", "POST") to the http(s) `url` with `headers` and
 * `body` (may be NULL/0), wait for the answer and read its body. The host only
 * lets the request through to hosts the manifest's `allowed_hosts` (or the
 * operator) allows, and replaces secret placeholders (pincer_secret_placeholder)
 * in headers and body on the way out. Any status is a success (check
 * resp->status); a refused or failed request is an error: `permanent` for a bad
 * URL or a denied host, `transient` for network failures. */
bool pincer_http_request(const char *method, const char *url, const pincer_header_t *headers,
                         size_t n_headers, const void *body, size_t body_len,
                         pincer_http_response_t *resp, pincer_error_t *err);
/* Free a response's body. */
void pincer_http_response_free(pincer_http_response_t *resp);

#ifdef __cplusplus
}
#endif

#endif /* PINCER_H */
