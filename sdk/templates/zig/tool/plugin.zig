//! {{name}}: a Pincer tool in Zig, using the C SDK. Called with `{}` it
//! answers with a greeting and the host clock's time, and counts its calls
//! in key-value. Edit `exports_pincer_plugin_tool_invoke`. Build:
//! `pincer plugin build` (it writes build/pincer_c.zig, imported below).

const std = @import("std");
const c = @import("build/pincer_c.zig");

export fn exports_pincer_plugin_plugin_name(ret: [*c]c.pincer_string_t) void {
    _ = c.pincer_return(ret, "{{name}}");
}

export fn exports_pincer_plugin_plugin_last_activity() u64 {
    return c.pincer_now_ms();
}

export fn exports_pincer_plugin_plugin_restart(err: [*c]c.pincer_error_t) bool {
    _ = err;
    return true;
}

export fn exports_pincer_plugin_tool_describe(ret: [*c]c.exports_pincer_plugin_tool_tool_info_t) void {
    _ = c.pincer_return(&ret.*.name, "{{name}}");
    _ = c.pincer_return(&ret.*.description, "Says hello and tells the time (scaffolded by `pincer plugin new`).");
    _ = c.pincer_return(&ret.*.parameters_schema, "{\"type\":\"object\",\"properties\":{}}");
}

export fn exports_pincer_plugin_tool_invoke(arguments: [*c]c.pincer_string_t, ret: [*c]c.pincer_string_t, err: [*c]c.pincer_error_t) bool {
    c.pincer_string_free(arguments);
    var calls: i64 = 0;
    if (!c.pincer_kv_increment("calls", 1, &calls, err)) return false;
    const now = c.pincer_now_ms();
    c.pincer_log(c.PINCER_INFO, "invoked");
    var buf: [256]u8 = undefined;
    const out = std.fmt.bufPrint(&buf, "{{\"greeting\":\"Hello from {{name}}!\",\"now_ms\":{d},\"calls\":{d}}}", .{ now, calls }) catch
        return c.pincer_error_str(err, c.PINCER_ERR_PERMANENT, "reply too long");
    c.pincer_string_copy(ret, out.ptr, out.len);
    return true;
}
