/*
 * {{name}}: a Pincer tool in C. Called with `{}` it answers with a greeting
 * and the host clock's time, and counts its calls in key-value. Edit
 * `exports_pincer_plugin_tool_invoke` to do real work. Build: `pincer plugin build`.
 */
#include <stdio.h>

#include "pincer.h"

void exports_pincer_plugin_plugin_name(pincer_string_t *ret) { pincer_return(ret, "{{name}}"); }

uint64_t exports_pincer_plugin_plugin_last_activity(void) { return pincer_now_ms(); }

bool exports_pincer_plugin_plugin_restart(pincer_error_t *err) {
  (void)err;
  return true;
}

void exports_pincer_plugin_tool_describe(exports_pincer_plugin_tool_tool_info_t *ret) {
  pincer_return(&ret->name, "{{name}}");
  pincer_return(&ret->description,
                "Says hello and tells the time (scaffolded by `pincer plugin new`).");
  pincer_return(&ret->parameters_schema, "{\"type\":\"object\",\"properties\":{}}");
}

bool exports_pincer_plugin_tool_invoke(pincer_string_t *arguments, pincer_string_t *ret,
                                       pincer_error_t *err) {
  int64_t calls = 0;
  if (!pincer_kv_increment("calls", 1, &calls, err)) return false;
  uint64_t now = pincer_now_ms();
  char count[24];
  snprintf(count, sizeof count, "%lld", (long long)calls);
  pincer_log_field(PINCER_INFO, "invoked", "calls", count);
  pincer_string_free(arguments);
  char out[256];
  snprintf(out, sizeof out,
           "{\"greeting\":\"Hello from {{name}}!\",\"now_ms\":%llu,\"calls\":%lld}",
           (unsigned long long)now, (long long)calls);
  return pincer_return(ret, out);
}
