/* pincer.c: the C SDK's helper layer (see pincer.h). */
#include "pincer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(PINCER_CHANNEL)
#define PINCER_WORLD(x) channel_plugin_##x
#else
#define PINCER_WORLD(x) tool_plugin_##x
#endif

pincer_string_t pincer_str(const char *s) {
  pincer_string_t v;
  v.ptr = (uint8_t *)s;
  v.len = s ? strlen(s) : 0;
  return v;
}

void pincer_string_copy(pincer_string_t *out, const char *s, size_t len) {
  PINCER_WORLD(string_dup_n)(out, s, len);
}

bool pincer_return(pincer_string_t *ret, const char *s) {
  PINCER_WORLD(string_dup)(ret, s ? s : "");
  return true;
}

char *pincer_cstr(const pincer_string_t *s) {
  char *out = malloc(s->len + 1);
  if (!out) return NULL;
  if (s->len) memcpy(out, s->ptr, s->len);
  out[s->len] = 0;
  return out;
}

void pincer_string_free(pincer_string_t *s) { PINCER_WORLD(string_free)(s); }

void pincer_bytes_free(pincer_bytes_t *b) { PINCER_WORLD(list_u8_free)(b); }

bool pincer_error(pincer_error_t *err, uint8_t kind, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  err->tag = kind;
  /* Every string case of the variant sits at the same place in the union. */
  PINCER_WORLD(string_dup_n)(&err->val.config, buf, (size_t)n);
  return false;
}

bool pincer_error_str(pincer_error_t *err, uint8_t kind, const char *message) {
  err->tag = kind;
  PINCER_WORLD(string_dup)(&err->val.config, message ? message : "");
  return false;
}

bool pincer_error_rate_limited(pincer_error_t *err, uint64_t retry_after_ms, const char *message) {
  err->tag = PINCER_PLUGIN_TYPES_ERROR_RATE_LIMITED;
  err->val.rate_limited.retry_after_ms = retry_after_ms;
  PINCER_WORLD(string_dup)(&err->val.rate_limited.message, message ? message : "");
  return false;
}

pincer_string_t pincer_error_message(const pincer_error_t *err) {
  if (err->tag == PINCER_PLUGIN_TYPES_ERROR_RATE_LIMITED) return err->val.rate_limited.message;
  return err->val.config;
}

void pincer_log(uint8_t level, const char *message) {
  pincer_string_t m = pincer_str(message);
  pincer_fields_t none = {0};
  pincer_plugin_log_write(level, &m, &none);
}

void pincer_log_field(uint8_t level, const char *message, const char *key, const char *value) {
  pincer_string_t m = pincer_str(message);
  pincer_field_t field;
  field.f0 = pincer_str(key);
  field.f1 = pincer_str(value);
  pincer_fields_t fields;
  fields.ptr = &field;
  fields.len = 1;
  pincer_plugin_log_write(level, &m, &fields);
}

bool pincer_kv_get(const char *key, pincer_bytes_t *out, bool *found, pincer_error_t *err) {
  pincer_string_t k = pincer_str(key);
  pincer_option_bytes_t got;
  if (!pincer_plugin_kv_get(&k, &got, err)) return false;
  *found = got.is_some;
  if (got.is_some) {
    *out = got.val;
  } else {
    out->ptr = NULL;
    out->len = 0;
  }
  return true;
}

bool pincer_kv_set(const char *key, const void *value, size_t len, pincer_error_t *err) {
  pincer_string_t k = pincer_str(key);
  pincer_bytes_t v;
  v.ptr = (uint8_t *)value;
  v.len = len;
  return pincer_plugin_kv_set(&k, &v, err);
}

bool pincer_kv_delete(const char *key, pincer_error_t *err) {
  pincer_string_t k = pincer_str(key);
  return pincer_plugin_kv_delete(&k, err);
}

bool pincer_kv_increment(const char *key, int64_t delta, int64_t *out, pincer_error_t *err) {
  pincer_string_t k = pincer_str(key);
  return pincer_plugin_kv_increment(&k, delta, out, err);
}

uint64_t pincer_now_ms(void) { return pincer_plugin_clock_now_ms(); }

bool pincer_secret_exists(const char *name) {
  pincer_string_t n = pincer_str(name);
  return pincer_plugin_secrets_exists(&n);
}

char *pincer_secret_placeholder(const char *name) {
  pincer_string_t n = pincer_str(name);
  pincer_string_t out;
  pincer_plugin_secrets_placeholder(&n, &out);
  char *s = pincer_cstr(&out);
  pincer_string_free(&out);
  return s;
}

/* ---- outgoing HTTP --------------------------------------------------------- */

static uint8_t http_method_tag(const char *m) {
  static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (uint8_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(m, names[i])) return i;
  return WASI_HTTP_TYPES_METHOD_OTHER;
}

static bool http_error(pincer_error_t *err, const wasi_http_types_error_code_t *code) {
  uint8_t tag = code->tag;
  if (tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED)
    return pincer_error(err, PINCER_ERR_PERMANENT,
                        "HTTP request denied by the host (is the host in the manifest's allowed_hosts?)");
  return pincer_error(err, PINCER_ERR_TRANSIENT, "HTTP request failed (wasi:http error-code %u)", (unsigned)tag);
}

bool pincer_http_request(const char *method, const char *url, const pincer_header_t *headers,
                         size_t n_headers, const void *body, size_t body_len,
                         pincer_http_response_t *resp, pincer_error_t *err) {
  memset(resp, 0, sizeof *resp);
  /* scheme://authority/path?query */
  wasi_http_types_scheme_t scheme;
  const char *rest;
  if (!strncmp(url, "http://", 7)) { scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP; rest = url + 7; }
  else if (!strncmp(url, "https://", 8)) { scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS; rest = url + 8; }
  else return pincer_error(err, PINCER_ERR_PERMANENT, "not an http(s) URL: %.200s", url);
  const char *slash = strchr(rest, '/');
  size_t auth_len = slash ? (size_t)(slash - rest) : strlen(rest);
  if (auth_len == 0) return pincer_error(err, PINCER_ERR_PERMANENT, "no host in URL: %.200s", url);

  wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
  for (size_t i = 0; i < n_headers; i++) {
    wasi_http_types_field_name_t name = pincer_str(headers[i].name);
    wasi_http_types_field_value_t value;
    value.ptr = (uint8_t *)headers[i].value;
    value.len = strlen(headers[i].value);
    wasi_http_types_header_error_t herr;
    if (!wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &name, &value, &herr)) {
      wasi_http_types_fields_drop_own(fields);
      return pincer_error(err, PINCER_ERR_PERMANENT, "invalid request header `%.100s`", headers[i].name);
    }
  }
  wasi_http_types_own_outgoing_request_t req = wasi_http_types_constructor_outgoing_request(fields);
  wasi_http_types_borrow_outgoing_request_t breq = wasi_http_types_borrow_outgoing_request(req);
  wasi_http_types_method_t m;
  m.tag = http_method_tag(method);
  if (m.tag == WASI_HTTP_TYPES_METHOD_OTHER) m.val.other = pincer_str(method);
  pincer_string_t authority;
  authority.ptr = (uint8_t *)rest;
  authority.len = auth_len;
  pincer_string_t path = pincer_str(slash ? slash : "/");
  if (!wasi_http_types_method_outgoing_request_set_method(breq, &m) ||
      !wasi_http_types_method_outgoing_request_set_scheme(breq, &scheme) ||
      !wasi_http_types_method_outgoing_request_set_authority(breq, &authority) ||
      !wasi_http_types_method_outgoing_request_set_path_with_query(breq, &path)) {
    wasi_http_types_outgoing_request_drop_own(req);
    return pincer_error(err, PINCER_ERR_PERMANENT, "invalid request: %.200s %.200s", method, url);
  }
  wasi_http_types_own_outgoing_body_t obody;
  if (!wasi_http_types_method_outgoing_request_body(breq, &obody)) {
    wasi_http_types_outgoing_request_drop_own(req);
    return pincer_error_str(err, PINCER_ERR_PERMANENT, "request body unavailable");
  }
  if (body_len > 0) {
    wasi_http_types_own_output_stream_t out;
    if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(obody), &out)) {
      wasi_http_types_outgoing_body_drop_own(obody);
      wasi_http_types_outgoing_request_drop_own(req);
      return pincer_error_str(err, PINCER_ERR_PERMANENT, "request body stream unavailable");
    }
    const uint8_t *p = body;
    for (size_t off = 0; off < body_len;) {
      size_t n = body_len - off < 4096 ? body_len - off : 4096; /* blocking-write-and-flush takes <= 4096 */
      pincer_bytes_t chunk;
      chunk.ptr = (uint8_t *)p + off;
      chunk.len = n;
      wasi_io_streams_stream_error_t serr;
      if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(wasi_io_streams_borrow_output_stream(out), &chunk, &serr)) {
        wasi_io_streams_stream_error_free(&serr);
        wasi_io_streams_output_stream_drop_own(out);
        wasi_http_types_outgoing_body_drop_own(obody);
        wasi_http_types_outgoing_request_drop_own(req);
        return pincer_error_str(err, PINCER_ERR_TRANSIENT, "writing the request body failed");
      }
      off += n;
    }
    wasi_io_streams_output_stream_drop_own(out);
  }
  wasi_http_types_error_code_t code;
  if (!wasi_http_types_static_outgoing_body_finish(obody, NULL, &code)) {
    wasi_http_types_outgoing_request_drop_own(req);
    bool r = http_error(err, &code);
    wasi_http_types_error_code_free(&code);
    return r;
  }
  wasi_http_outgoing_handler_own_future_incoming_response_t future;
  if (!wasi_http_outgoing_handler_handle(req, NULL, &future, &code)) {
    bool r = http_error(err, &code);
    wasi_http_types_error_code_free(&code);
    return r;
  }
  wasi_http_types_borrow_future_incoming_response_t bfuture = wasi_http_types_borrow_future_incoming_response(future);
  wasi_io_poll_own_pollable_t ready = wasi_http_types_method_future_incoming_response_subscribe(bfuture);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  bool have = wasi_http_types_method_future_incoming_response_get(bfuture, &got);
  wasi_http_types_future_incoming_response_drop_own(future);
  if (!have || got.is_err) return pincer_error_str(err, PINCER_ERR_TRANSIENT, "no HTTP response");
  if (got.val.ok.is_err) {
    bool r = http_error(err, &got.val.ok.val.err);
    wasi_http_types_error_code_free(&got.val.ok.val.err);
    return r;
  }
  wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
  resp->status = wasi_http_types_method_incoming_response_status(wasi_http_types_borrow_incoming_response(response));
  wasi_http_types_own_incoming_body_t ibody;
  if (!wasi_http_types_method_incoming_response_consume(wasi_http_types_borrow_incoming_response(response), &ibody)) {
    wasi_http_types_incoming_response_drop_own(response);
    return pincer_error_str(err, PINCER_ERR_TRANSIENT, "response body unavailable");
  }
  wasi_http_types_own_input_stream_t in;
  bool ok = wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(ibody), &in);
  size_t cap = 0;
  while (ok) {
    pincer_bytes_t chunk;
    wasi_io_streams_stream_error_t serr;
    if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(in), 65536, &chunk, &serr)) {
      if (serr.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
        ok = pincer_error_str(err, PINCER_ERR_TRANSIENT, "reading the response body failed");
      }
      wasi_io_streams_stream_error_free(&serr);
      break;
    }
    if (resp->body.len + chunk.len > PINCER_HTTP_MAX_BODY) {
      pincer_bytes_free(&chunk);
      ok = pincer_error(err, PINCER_ERR_PERMANENT, "response body larger than %u bytes", PINCER_HTTP_MAX_BODY);
      break;
    }
    if (resp->body.len + chunk.len > cap) {
      size_t want = cap ? cap * 2 : 4096;
      while (want < resp->body.len + chunk.len) want *= 2;
      uint8_t *grown = realloc(resp->body.ptr, want);
      if (!grown) {
        pincer_bytes_free(&chunk);
        ok = pincer_error_str(err, PINCER_ERR_TRANSIENT, "out of memory");
        break;
      }
      resp->body.ptr = grown;
      cap = want;
    }
    if (chunk.len) memcpy(resp->body.ptr + resp->body.len, chunk.ptr, chunk.len);
    resp->body.len += chunk.len;
    pincer_bytes_free(&chunk);
  }
  if (in.__handle) wasi_io_streams_input_stream_drop_own(in);
  wasi_http_types_incoming_body_drop_own(ibody);
  wasi_http_types_incoming_response_drop_own(response);
  if (!ok) pincer_http_response_free(resp);
  return ok;
}

void pincer_http_response_free(pincer_http_response_t *resp) {
  free(resp->body.ptr);
  resp->body.ptr = NULL;
  resp->body.len = 0;
}
