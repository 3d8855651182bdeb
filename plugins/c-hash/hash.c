/*
 * c-hash: a Pincer tool written in C with the C SDK (sdk/c).
 *
 * invoke({"text": "...", "algorithm": "sha256" | "crc32" | "fnv1a64",
 *         "encoding": "hex" | "base64"})   (algorithm and encoding optional)
 *   -> {"algorithm": ..., "encoding": ..., "digest": ..., "bytes": N,
 *       "calls": C, "bytes_total": T}
 * invoke({"url": "https://...", ...}) hashes the body of a GET of `url`
 *   instead (through wasi:http, so only to hosts the operator allows), sending
 *   `Authorization: Bearer <secret token>` when the operator granted the
 *   secret `token` (the plugin only ever holds its placeholder); the answer
 *   adds "status".
 *
 * `calls` and `bytes_total` are key-value counters kept by the host
 * (pincer:plugin/kv increment), so they survive restarts and are shared by
 * every instance. Bad arguments are a `permanent` error naming the problem.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pincer.h"

/* ---- a minimal JSON reader: the string members of a flat object -------- */

typedef struct {
  const char *s;
  size_t len, pos;
} reader_t;

static void ws(reader_t *r) {
  while (r->pos < r->len && strchr(" \t\r\n", r->s[r->pos])) r->pos++;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F)); return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

static int read_hex4(reader_t *r, unsigned *cp) {
  if (r->pos + 4 > r->len) return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(r->s[r->pos++]);
    if (h < 0) return 0;
    v = v << 4 | (unsigned)h;
  }
  *cp = v;
  return 1;
}

/* Read a JSON string at r->pos into a malloc'd buffer (or skip it if out is NULL). */
static int read_string(reader_t *r, char **out, size_t *out_len) {
  if (r->pos >= r->len || r->s[r->pos] != '"') return 0;
  r->pos++;
  char *buf = out ? malloc(r->len - r->pos + 1) : NULL;
  if (out && !buf) return 0;
  size_t n = 0;
  while (r->pos < r->len) {
    char c = r->s[r->pos++];
    if (c == '"') {
      if (out) { buf[n] = 0; *out = buf; *out_len = n; }
      return 1;
    }
    if ((unsigned char)c < 0x20) break;
    if (c != '\\') { if (buf) buf[n] = c; n++; continue; }
    if (r->pos >= r->len) break;
    char e = r->s[r->pos++];
    char lit = 0;
    switch (e) {
      case '"': lit = '"'; break;
      case '\\': lit = '\\'; break;
      case '/': lit = '/'; break;
      case 'b': lit = '\b'; break;
      case 'f': lit = '\f'; break;
      case 'n': lit = '\n'; break;
      case 'r': lit = '\r'; break;
      case 't': lit = '\t'; break;
      case 'u': {
        unsigned cp;
        if (!read_hex4(r, &cp)) goto bad;
        if (cp >= 0xD800 && cp < 0xDC00) {
          unsigned lo;
          if (r->pos + 2 > r->len || r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u') goto bad;
          r->pos += 2;
          if (!read_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) goto bad;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        char tmp[4];
        size_t k = put_utf8(tmp, cp);
        if (buf) memcpy(buf + n, tmp, k);
        n += k;
        continue;
      }
      default: goto bad;
    }
    if (buf) buf[n] = lit;
    n++;
  }
bad:
  free(buf);
  return 0;
}

/* Skip any JSON value (strings, numbers, literals, nested arrays/objects). */
static int skip_value(reader_t *r) {
  ws(r);
  if (r->pos >= r->len) return 0;
  char c = r->s[r->pos];
  if (c == '"') return read_string(r, NULL, NULL);
  if (c == '{' || c == '[') {
    int depth = 0;
    while (r->pos < r->len) {
      char d = r->s[r->pos];
      if (d == '"') { if (!read_string(r, NULL, NULL)) return 0; continue; }
      r->pos++;
      if (d == '{' || d == '[') depth++;
      else if (d == '}' || d == ']') { if (--depth == 0) return 1; }
    }
    return 0;
  }
  size_t start = r->pos;
  while (r->pos < r->len && !strchr(",}] \t\r\n", r->s[r->pos])) r->pos++;
  return r->pos > start;
}

typedef struct {
  char *text, *algorithm, *encoding, *url;
  size_t text_len;
} args_t;

static void args_free(args_t *a) { free(a->text); free(a->algorithm); free(a->encoding); free(a->url); }

/* Parse {"text":..,"algorithm":..,"encoding":..}; other members are ignored. */
static const char *parse_args(const char *s, size_t len, args_t *a) {
  reader_t r = {s, len, 0};
  memset(a, 0, sizeof *a);
  ws(&r);
  if (r.pos >= r.len || r.s[r.pos] != '{') return "the arguments must be a JSON object";
  r.pos++;
  ws(&r);
  if (r.pos < r.len && r.s[r.pos] == '}') return NULL;
  for (;;) {
    char *key = NULL;
    size_t key_len = 0;
    ws(&r);
    if (!read_string(&r, &key, &key_len)) return "malformed JSON (expected a member name)";
    ws(&r);
    if (r.pos >= r.len || r.s[r.pos] != ':') { free(key); return "malformed JSON (expected `:`)"; }
    r.pos++;
    ws(&r);
    char **slot = NULL;
    size_t dummy, *slot_len = &dummy;
    if (!strcmp(key, "text")) { slot = &a->text; slot_len = &a->text_len; }
    else if (!strcmp(key, "algorithm")) slot = &a->algorithm;
    else if (!strcmp(key, "encoding")) slot = &a->encoding;
    else if (!strcmp(key, "url")) slot = &a->url;
    free(key);
    if (slot) {
      if (*slot) return "a member appears twice";
      if (!read_string(&r, slot, slot_len)) return "`text`, `url`, `algorithm` and `encoding` must be strings";
    } else if (!skip_value(&r)) {
      return "malformed JSON value";
    }
    ws(&r);
    if (r.pos < r.len && r.s[r.pos] == ',') { r.pos++; continue; }
    if (r.pos < r.len && r.s[r.pos] == '}') return NULL;
    return "malformed JSON (expected `,` or `}`)";
  }
}

/* ---- digests ------------------------------------------------------------ */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  size_t i = 0;
  for (; i + 64 <= len; i += 64) sha256_block(h, data + i);
  uint8_t tail[128] = {0};
  size_t rest = len - i;
  memcpy(tail, data + i, rest);
  tail[rest] = 0x80;
  size_t blocks = rest + 9 > 64 ? 2 : 1;
  uint64_t bits = (uint64_t)len * 8;
  for (int k = 0; k < 8; k++) tail[blocks * 64 - 1 - k] = (uint8_t)(bits >> (8 * k));
  for (size_t b = 0; b < blocks; b++) sha256_block(h, tail + 64 * b);
  for (int k = 0; k < 8; k++) {
    out[4 * k] = (uint8_t)(h[k] >> 24); out[4 * k + 1] = (uint8_t)(h[k] >> 16);
    out[4 * k + 2] = (uint8_t)(h[k] >> 8); out[4 * k + 3] = (uint8_t)h[k];
  }
}

static uint32_t crc32(const uint8_t *p, size_t len) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}

static uint64_t fnv1a64(const uint8_t *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
  return h;
}

static void to_hex(const uint8_t *d, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) { out[2 * i] = digits[d[i] >> 4]; out[2 * i + 1] = digits[d[i] & 15]; }
  out[2 * n] = 0;
}

static void to_base64(const uint8_t *d, size_t n, char *out) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
    out[o++] = t[v >> 18 & 63];
    out[o++] = t[v >> 12 & 63];
    out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? t[v & 63] : '=';
  }
  out[o] = 0;
}

/* ---- the plugin --------------------------------------------------------- */

void exports_pincer_plugin_plugin_name(pincer_string_t *ret) { pincer_return(ret, "c-hash"); }

uint64_t exports_pincer_plugin_plugin_last_activity(void) { return pincer_now_ms(); }

bool exports_pincer_plugin_plugin_restart(pincer_error_t *err) {
  (void)err;
  return true;
}

void exports_pincer_plugin_tool_describe(exports_pincer_plugin_tool_tool_info_t *ret) {
  pincer_return(&ret->name, "c-hash");
  pincer_return(&ret->description,
                "Hash text (or the body fetched from a URL) with SHA-256 (default), CRC-32 or FNV-1a 64, as hex (default) or base64.");
  pincer_return(&ret->parameters_schema,
                "{\"type\":\"object\",\"properties\":{"
                "\"text\":{\"type\":\"string\"},"
                "\"url\":{\"type\":\"string\",\"description\":\"hash the body of a GET of this URL instead\"},"
                "\"algorithm\":{\"enum\":[\"sha256\",\"crc32\",\"fnv1a64\"]},"
                "\"encoding\":{\"enum\":[\"hex\",\"base64\"]}}}");
}

bool exports_pincer_plugin_tool_invoke(pincer_string_t *arguments, pincer_string_t *ret,
                                       pincer_error_t *err) {
  args_t a;
  const char *bad = parse_args((const char *)arguments->ptr, arguments->len, &a);
  pincer_string_free(arguments);
  if (bad) { args_free(&a); return pincer_error(err, PINCER_ERR_PERMANENT, "c-hash: %s", bad); }
  int status = -1;
  if (a.url && !a.text) {
    pincer_header_t auth[1];
    char *placeholder = NULL, *value = NULL;
    size_t n_headers = 0;
    if (pincer_secret_exists("token")) {
      placeholder = pincer_secret_placeholder("token");
      value = malloc(strlen(placeholder) + 8);
      if (value) {
        strcpy(value, "Bearer ");
        strcat(value, placeholder);
        auth[0].name = "authorization";
        auth[0].value = value;
        n_headers = 1;
      }
    }
    pincer_http_response_t resp;
    bool fetched = pincer_http_request("GET", a.url, auth, n_headers, NULL, 0, &resp, err);
    free(placeholder);
    free(value);
    if (!fetched) { args_free(&a); return false; }
    status = resp.status;
    a.text = (char *)resp.body.ptr; /* owned by `a` from here */
    a.text_len = resp.body.len;
    if (!a.text) a.text = calloc(1, 1);
  }
  if (!a.text) { args_free(&a); return pincer_error_str(err, PINCER_ERR_PERMANENT, "c-hash: `text` or `url` is required"); }
  const char *algorithm = a.algorithm ? a.algorithm : "sha256";
  const char *encoding = a.encoding ? a.encoding : "hex";
  uint8_t digest[32];
  size_t n;
  if (!strcmp(algorithm, "sha256")) {
    sha256((const uint8_t *)a.text, a.text_len, digest);
    n = 32;
  } else if (!strcmp(algorithm, "crc32")) {
    uint32_t c = crc32((const uint8_t *)a.text, a.text_len);
    for (int k = 0; k < 4; k++) digest[k] = (uint8_t)(c >> (24 - 8 * k));
    n = 4;
  } else if (!strcmp(algorithm, "fnv1a64")) {
    uint64_t h = fnv1a64((const uint8_t *)a.text, a.text_len);
    for (int k = 0; k < 8; k++) digest[k] = (uint8_t)(h >> (56 - 8 * k));
    n = 8;
  } else {
    bool r = pincer_error(err, PINCER_ERR_PERMANENT,
                          "c-hash: unknown algorithm `%.40s` (use sha256, crc32 or fnv1a64)", algorithm);
    args_free(&a);
    return r;
  }
  char text[80];
  if (!strcmp(encoding, "hex")) to_hex(digest, n, text);
  else if (!strcmp(encoding, "base64")) to_base64(digest, n, text);
  else {
    bool r = pincer_error(err, PINCER_ERR_PERMANENT,
                          "c-hash: unknown encoding `%.40s` (use hex or base64)", encoding);
    args_free(&a);
    return r;
  }
  int64_t calls = 0, total = 0;
  size_t bytes = a.text_len;
  if (!pincer_kv_increment("calls", 1, &calls, err) ||
      !pincer_kv_increment("bytes_total", (int64_t)bytes, &total, err)) {
    args_free(&a);
    return false;
  }
  pincer_log_field(PINCER_DEBUG, "hashed", "algorithm", algorithm);
  char out[340];
  int len = snprintf(out, sizeof out,
                     "{\"algorithm\":\"%s\",\"encoding\":\"%s\",\"digest\":\"%s\",\"bytes\":%zu,"
                     "\"calls\":%lld,\"bytes_total\":%lld",
                     algorithm, encoding, text, bytes, (long long)calls, (long long)total);
  if (status >= 0) snprintf(out + len, sizeof out - (size_t)len, ",\"status\":%d}", status);
  else snprintf(out + len, sizeof out - (size_t)len, "}");
  args_free(&a);
  return pincer_return(ret, out);
}
