// {{name}}: a Pincer channel in JavaScript (jco componentize). Text POSTed to
// its webhook (`/channels/{{name}}/webhook?conversation=c1&sender=u1`) comes
// in as a message; each reply is logged and kept in key-value under sent/<id>.
import { nowMs } from "pincer:plugin/clock@0.2.0";
import { increment, set } from "pincer:plugin/kv@0.2.0";
import { write } from "pincer:plugin/log@0.2.0";

const unsupported = (what) => ({ tag: "unsupported", val: `{{name}} does not support ${what}` });

export const plugin = {
  name() { return "{{name}}"; },
  lastActivity() { return nowMs(); },
  restart() {},
};

export const channel = {
  describe() {
    return {
      mode: "webhook", edit: false, typing: false, maxMessageLength: 4096,
      streaming: "final-only", minEditIntervalMs: 0, typingTtlMs: 0,
      readReceipts: false, attachments: false,
    };
  },
  start(_config) {},
  poll(_cursor, _waitMs) { throw unsupported("polling (it receives by webhook)"); },
  handleWebhook(request) {
    const q = new URLSearchParams(request.query);
    const n = increment("next_id", 1n);
    const message = {
      id: `in-${n}`, conversation: q.get("conversation") ?? "default", chatType: "direct",
      thread: undefined, sender: q.get("sender") ?? "user", senderName: undefined,
      senderIsBot: false, mentioned: false, replyTo: undefined,
      text: new TextDecoder().decode(request.body), attachments: [], reaction: undefined,
      timestamp: nowMs(),
    };
    return { status: 200, headers: [], body: new TextEncoder().encode("ok"), messages: [message], statuses: [] };
  },
  send(message) {
    const id = `out-${increment("next_id", 1n)}`;
    write("info", "reply", [["conversation", message.conversation], ["text", message.text]]);
    set(`sent/${id}`, new TextEncoder().encode(message.text));
    return id;
  },
  edit() { throw unsupported("editing"); },
  draft() { throw unsupported("drafts"); },
  typing() { throw unsupported("typing indicators"); },
  markRead() { throw unsupported("read receipts"); },
  fetchAttachment() { throw unsupported("attachments"); },
};
