//! zig-textstats: a Pincer tool written in Zig with the C SDK (sdk/c).
//!
//! invoke({"text": "..."}) -> {"words": W, "lines": L, "chars": C, "bytes": B,
//!   "longest_word": "...", "calls": N, "words_total": T}
//!
//! `calls` and `words_total` are key-value counters kept by the host. Bad
//! arguments are a `permanent` error naming the problem.

const std = @import("std");
const c = @import("build/pincer_c.zig");

const Args = struct { text: []const u8 };

const allocator = std.heap.c_allocator;

fn fail(err: [*c]c.pincer_error_t, message: [*:0]const u8) bool {
    return c.pincer_error_str(err, c.PINCER_ERR_PERMANENT, message);
}

/// Append `s` to `out` as a JSON string literal.
fn jsonString(out: *std.ArrayList(u8), s: []const u8) !void {
    try out.append(allocator, '"');
    for (s) |ch| {
        switch (ch) {
            '"' => try out.appendSlice(allocator, "\\\""),
            '\\' => try out.appendSlice(allocator, "\\\\"),
            0...0x1f => {
                var buf: [6]u8 = undefined;
                try out.appendSlice(allocator, try std.fmt.bufPrint(&buf, "\\u{x:0>4}", .{ch}));
            },
            else => try out.append(allocator, ch),
        }
    }
    try out.append(allocator, '"');
}

export fn exports_pincer_plugin_plugin_name(ret: [*c]c.pincer_string_t) void {
    _ = c.pincer_return(ret, "zig-textstats");
}

export fn exports_pincer_plugin_plugin_last_activity() u64 {
    return c.pincer_now_ms();
}

export fn exports_pincer_plugin_plugin_restart(err: [*c]c.pincer_error_t) bool {
    _ = err;
    return true;
}

export fn exports_pincer_plugin_tool_describe(ret: [*c]c.exports_pincer_plugin_tool_tool_info_t) void {
    _ = c.pincer_return(&ret.*.name, "zig-textstats");
    _ = c.pincer_return(&ret.*.description, "Counts the words, lines, characters and bytes of a text, and finds its longest word.");
    _ = c.pincer_return(&ret.*.parameters_schema, "{\"type\":\"object\",\"required\":[\"text\"],\"properties\":{\"text\":{\"type\":\"string\"}}}");
}

export fn exports_pincer_plugin_tool_invoke(arguments: [*c]c.pincer_string_t, ret: [*c]c.pincer_string_t, err: [*c]c.pincer_error_t) bool {
    defer c.pincer_string_free(arguments);
    const raw: []const u8 = if (arguments.*.len == 0) "" else arguments.*.ptr[0..arguments.*.len];
    const parsed = std.json.parseFromSlice(Args, allocator, raw, .{ .ignore_unknown_fields = true }) catch
        return fail(err, "zig-textstats: the arguments must be a JSON object with a string `text`");
    defer parsed.deinit();
    const text = parsed.value.text;

    var words: i64 = 0;
    var longest: []const u8 = "";
    var it = std.mem.tokenizeAny(u8, text, " \t\r\n");
    while (it.next()) |word| {
        words += 1;
        if (word.len > longest.len) longest = word;
    }
    var lines: usize = std.mem.count(u8, text, "\n");
    if (text.len > 0 and text[text.len - 1] != '\n') lines += 1;
    const chars = std.unicode.utf8CountCodepoints(text) catch text.len;

    var calls: i64 = 0;
    var total: i64 = 0;
    if (!c.pincer_kv_increment("calls", 1, &calls, err)) return false;
    if (!c.pincer_kv_increment("words_total", words, &total, err)) return false;
    c.pincer_log(c.PINCER_DEBUG, "counted");

    var out: std.ArrayList(u8) = .empty;
    defer out.deinit(allocator);
    var head: [160]u8 = undefined;
    const prefix = std.fmt.bufPrint(&head, "{{\"words\":{d},\"lines\":{d},\"chars\":{d},\"bytes\":{d},\"calls\":{d},\"words_total\":{d},\"longest_word\":", .{ words, lines, chars, text.len, calls, total }) catch
        return fail(err, "zig-textstats: formatting failed");
    out.appendSlice(allocator, prefix) catch return fail(err, "zig-textstats: out of memory");
    jsonString(&out, longest) catch return fail(err, "zig-textstats: out of memory");
    out.append(allocator, '}') catch return fail(err, "zig-textstats: out of memory");
    c.pincer_string_copy(ret, out.items.ptr, out.items.len);
    return true;
}
