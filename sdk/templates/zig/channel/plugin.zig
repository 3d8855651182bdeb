//! {{name}}: a Pincer channel in Zig, using the C SDK. Text POSTed to its
//! webhook (`/channels/{{name}}/webhook?conversation=c1&sender=u1`) comes in
//! as a message; every reply the gateway sends is logged and kept in
//! key-value under `sent/<id>`. Edit handle_webhook and send to talk to a real
//! platform. Build: `pincer plugin build` (it writes build/pincer_c.zig).

const std = @import("std");
const c = @import("build/pincer_c.zig");

const Err = c.exports_pincer_plugin_channel_error_t;
const Str = c.pincer_string_t;

fn slice(s: [*c]const Str) []const u8 {
    return if (s.*.len == 0) "" else s.*.ptr[0..s.*.len];
}

fn copy(out: [*c]Str, s: []const u8) void {
    c.pincer_string_copy(out, s.ptr, s.len);
}

/// The value of `key` in a query string (no percent-decoding).
fn queryParam(query: []const u8, key: []const u8) ?[]const u8 {
    var it = std.mem.splitScalar(u8, query, '&');
    while (it.next()) |pair| {
        if (pair.len > key.len and std.mem.startsWith(u8, pair, key) and pair[key.len] == '=')
            return pair[key.len + 1 ..];
    }
    return null;
}

fn unsupported(err: [*c]Err, message: [*:0]const u8) bool {
    return c.pincer_error_str(err, c.PINCER_ERR_UNSUPPORTED, message);
}

export fn exports_pincer_plugin_plugin_name(ret: [*c]Str) void {
    _ = c.pincer_return(ret, "{{name}}");
}

export fn exports_pincer_plugin_plugin_last_activity() u64 {
    return c.pincer_now_ms();
}

export fn exports_pincer_plugin_plugin_restart(err: [*c]c.pincer_error_t) bool {
    _ = err;
    return true;
}

export fn exports_pincer_plugin_channel_describe(ret: [*c]c.exports_pincer_plugin_channel_capabilities_t) void {
    ret.* = std.mem.zeroes(c.exports_pincer_plugin_channel_capabilities_t);
    ret.*.mode = c.EXPORTS_PINCER_PLUGIN_CHANNEL_RECEIVE_MODE_WEBHOOK;
    ret.*.max_message_length = 4096;
    ret.*.streaming = c.EXPORTS_PINCER_PLUGIN_CHANNEL_STREAM_STYLE_FINAL_ONLY;
}

export fn exports_pincer_plugin_channel_start(config: [*c]c.exports_pincer_plugin_channel_list_entry_t, err: [*c]Err) bool {
    _ = err;
    c.exports_pincer_plugin_channel_list_entry_free(config);
    return true;
}

export fn exports_pincer_plugin_channel_poll(cursor: [*c]Str, wait_ms: u32, ret: [*c]c.exports_pincer_plugin_channel_poll_batch_t, err: [*c]Err) bool {
    _ = wait_ms;
    _ = ret;
    if (cursor != null) c.pincer_string_free(cursor);
    return unsupported(err, "{{name}} does not poll (it receives by webhook)");
}

export fn exports_pincer_plugin_channel_handle_webhook(request: [*c]c.exports_pincer_plugin_channel_webhook_request_t, ret: [*c]c.exports_pincer_plugin_channel_webhook_response_t, err: [*c]Err) bool {
    defer c.exports_pincer_plugin_channel_webhook_request_free(request);
    var n: i64 = 0;
    if (!c.pincer_kv_increment("next_id", 1, &n, err)) return false;
    // Lists returned to the host are freed with free() after the call.
    const raw = std.c.malloc(@sizeOf(c.exports_pincer_plugin_channel_inbound_message_t)) orelse
        return c.pincer_error_str(err, c.PINCER_ERR_TRANSIENT, "out of memory");
    const m: *c.exports_pincer_plugin_channel_inbound_message_t = @ptrCast(@alignCast(raw));
    m.* = std.mem.zeroes(c.exports_pincer_plugin_channel_inbound_message_t);
    var id: [32]u8 = undefined;
    copy(&m.id, std.fmt.bufPrint(&id, "in-{d}", .{n}) catch "in");
    const query = slice(&request.*.query);
    copy(&m.conversation, queryParam(query, "conversation") orelse "default");
    copy(&m.sender, queryParam(query, "sender") orelse "user");
    m.chat_type = c.EXPORTS_PINCER_PLUGIN_CHANNEL_CHAT_TYPE_DIRECT;
    const body = request.*.body;
    copy(&m.text, if (body.len == 0) "" else body.ptr[0..body.len]);
    m.timestamp = c.pincer_now_ms();

    ret.* = std.mem.zeroes(c.exports_pincer_plugin_channel_webhook_response_t);
    ret.*.status = 200;
    ret.*.messages.ptr = m;
    ret.*.messages.len = 1;
    return true;
}

export fn exports_pincer_plugin_channel_send(message: [*c]c.exports_pincer_plugin_channel_outbound_message_t, ret: [*c]Str, err: [*c]Err) bool {
    defer c.exports_pincer_plugin_channel_outbound_message_free(message);
    var n: i64 = 0;
    if (!c.pincer_kv_increment("next_id", 1, &n, err)) return false;
    var id_buf: [32]u8 = undefined;
    const id = std.fmt.bufPrint(&id_buf, "out-{d}", .{n}) catch "out";
    var key_buf: [48]u8 = undefined;
    // NUL-terminated for the C helper.
    const key = std.fmt.bufPrint(&key_buf, "sent/{s}\x00", .{id}) catch return false;
    const text = slice(&message.*.text);
    c.pincer_log(c.PINCER_INFO, "reply");
    if (!c.pincer_kv_set(key.ptr, text.ptr, text.len, err)) return false;
    copy(ret, id);
    return true;
}

export fn exports_pincer_plugin_channel_edit(conversation: [*c]Str, message_id: [*c]Str, text: [*c]Str, format: c.exports_pincer_plugin_channel_text_format_t, err: [*c]Err) bool {
    _ = format;
    c.pincer_string_free(conversation);
    c.pincer_string_free(message_id);
    c.pincer_string_free(text);
    return unsupported(err, "{{name}} does not support editing");
}

export fn exports_pincer_plugin_channel_draft(target: [*c]c.exports_pincer_plugin_channel_chat_target_t, draft_id: u64, text: [*c]Str, err: [*c]Err) bool {
    _ = draft_id;
    c.exports_pincer_plugin_channel_chat_target_free(target);
    c.pincer_string_free(text);
    return unsupported(err, "{{name}} does not support drafts");
}

export fn exports_pincer_plugin_channel_typing(target: [*c]c.exports_pincer_plugin_channel_chat_target_t, err: [*c]Err) bool {
    c.exports_pincer_plugin_channel_chat_target_free(target);
    return unsupported(err, "{{name}} does not support typing indicators");
}

export fn exports_pincer_plugin_channel_mark_read(target: [*c]c.exports_pincer_plugin_channel_chat_target_t, err: [*c]Err) bool {
    c.exports_pincer_plugin_channel_chat_target_free(target);
    return unsupported(err, "{{name}} does not support read receipts");
}

export fn exports_pincer_plugin_channel_fetch_attachment(handle: [*c]Str, ret: [*c]c.exports_pincer_plugin_channel_download_request_t, err: [*c]Err) bool {
    _ = ret;
    c.pincer_string_free(handle);
    return unsupported(err, "{{name}} does not support attachments");
}
