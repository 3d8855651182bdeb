/*
 * {{name}}: a Pincer channel in C. Text POSTed to its webhook
 * (`/channels/{{name}}/webhook?conversation=c1&sender=u1`) comes in as a
 * message; every reply the gateway sends is logged and kept in key-value
 * under `sent/<id>`. Edit handle_webhook and send to talk to a real platform.
 * Build: `pincer plugin build`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pincer.h"

typedef exports_pincer_plugin_channel_error_t error_t_;

/* The value of `key` in the query string `q` (no percent-decoding), copied into `out`. */
static void query_param(const pincer_string_t *q, const char *key, const char *fallback,
                        pincer_string_t *out) {
  size_t klen = strlen(key), i = 0;
  const char *s = (const char *)q->ptr;
  while (i < q->len) {
    size_t end = i;
    while (end < q->len && s[end] != '&') end++;
    if (end - i > klen && memcmp(s + i, key, klen) == 0 && s[i + klen] == '=') {
      pincer_string_copy(out, s + i + klen + 1, end - i - klen - 1);
      return;
    }
    i = end + 1;
  }
  pincer_return(out, fallback);
}

static bool unsupported(error_t_ *err, const char *what) {
  return pincer_error(err, PINCER_ERR_UNSUPPORTED, "{{name}} does not support %s", what);
}

void exports_pincer_plugin_plugin_name(pincer_string_t *ret) { pincer_return(ret, "{{name}}"); }

uint64_t exports_pincer_plugin_plugin_last_activity(void) { return pincer_now_ms(); }

bool exports_pincer_plugin_plugin_restart(pincer_error_t *err) {
  (void)err;
  return true;
}

void exports_pincer_plugin_channel_describe(exports_pincer_plugin_channel_capabilities_t *ret) {
  memset(ret, 0, sizeof *ret);
  ret->mode = EXPORTS_PINCER_PLUGIN_CHANNEL_RECEIVE_MODE_WEBHOOK;
  ret->max_message_length = 4096;
  ret->streaming = EXPORTS_PINCER_PLUGIN_CHANNEL_STREAM_STYLE_FINAL_ONLY;
}

bool exports_pincer_plugin_channel_start(exports_pincer_plugin_channel_list_entry_t *config,
                                         error_t_ *err) {
  (void)err;
  exports_pincer_plugin_channel_list_entry_free(config);
  return true;
}

bool exports_pincer_plugin_channel_poll(pincer_string_t *maybe_cursor, uint32_t wait_ms,
                                        exports_pincer_plugin_channel_poll_batch_t *ret,
                                        error_t_ *err) {
  (void)wait_ms;
  (void)ret;
  if (maybe_cursor) pincer_string_free(maybe_cursor);
  return unsupported(err, "polling (it receives by webhook)");
}

bool exports_pincer_plugin_channel_handle_webhook(
    exports_pincer_plugin_channel_webhook_request_t *request,
    exports_pincer_plugin_channel_webhook_response_t *ret, error_t_ *err) {
  int64_t n = 0;
  if (!pincer_kv_increment("next_id", 1, &n, err)) {
    exports_pincer_plugin_channel_webhook_request_free(request);
    return false;
  }
  exports_pincer_plugin_channel_inbound_message_t *m = calloc(1, sizeof *m);
  if (!m) {
    exports_pincer_plugin_channel_webhook_request_free(request);
    return pincer_error(err, PINCER_ERR_TRANSIENT, "out of memory");
  }
  char id[32];
  snprintf(id, sizeof id, "in-%lld", (long long)n);
  pincer_return(&m->id, id);
  query_param(&request->query, "conversation", "default", &m->conversation);
  query_param(&request->query, "sender", "user", &m->sender);
  m->chat_type = EXPORTS_PINCER_PLUGIN_CHANNEL_CHAT_TYPE_DIRECT;
  pincer_string_copy(&m->text, (const char *)request->body.ptr, request->body.len);
  m->timestamp = pincer_now_ms();
  exports_pincer_plugin_channel_webhook_request_free(request);

  memset(ret, 0, sizeof *ret);
  ret->status = 200;
  ret->body.ptr = (uint8_t *)strdup("ok");
  ret->body.len = 2;
  ret->messages.ptr = m;
  ret->messages.len = 1;
  return true;
}

bool exports_pincer_plugin_channel_send(exports_pincer_plugin_channel_outbound_message_t *message,
                                        pincer_string_t *ret, error_t_ *err) {
  int64_t n = 0;
  bool ok = pincer_kv_increment("next_id", 1, &n, err);
  char id[32], key[40];
  snprintf(id, sizeof id, "out-%lld", (long long)n);
  snprintf(key, sizeof key, "sent/%s", id);
  if (ok) {
    char *text = pincer_cstr(&message->text);
    pincer_log_field(PINCER_INFO, "reply", "text", text ? text : "");
    free(text);
    ok = pincer_kv_set(key, message->text.ptr, message->text.len, err);
  }
  exports_pincer_plugin_channel_outbound_message_free(message);
  return ok && pincer_return(ret, id);
}

bool exports_pincer_plugin_channel_edit(pincer_string_t *conversation, pincer_string_t *message_id,
                                        pincer_string_t *text,
                                        exports_pincer_plugin_channel_text_format_t format,
                                        error_t_ *err) {
  (void)format;
  pincer_string_free(conversation);
  pincer_string_free(message_id);
  pincer_string_free(text);
  return unsupported(err, "editing");
}

bool exports_pincer_plugin_channel_draft(exports_pincer_plugin_channel_chat_target_t *target,
                                         uint64_t draft_id, pincer_string_t *text, error_t_ *err) {
  (void)draft_id;
  exports_pincer_plugin_channel_chat_target_free(target);
  pincer_string_free(text);
  return unsupported(err, "drafts");
}

bool exports_pincer_plugin_channel_typing(exports_pincer_plugin_channel_chat_target_t *target,
                                          error_t_ *err) {
  exports_pincer_plugin_channel_chat_target_free(target);
  return unsupported(err, "typing indicators");
}

bool exports_pincer_plugin_channel_mark_read(exports_pincer_plugin_channel_chat_target_t *target,
                                             error_t_ *err) {
  exports_pincer_plugin_channel_chat_target_free(target);
  return unsupported(err, "read receipts");
}

bool exports_pincer_plugin_channel_fetch_attachment(
    pincer_string_t *handle, exports_pincer_plugin_channel_download_request_t *ret,
    error_t_ *err) {
  (void)ret;
  pincer_string_free(handle);
  return unsupported(err, "attachments");
}
