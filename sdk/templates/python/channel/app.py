"""{{name}}: a Pincer channel in Python (componentize-py). Text POSTed to its
webhook (`/channels/{{name}}/webhook?conversation=c1&sender=u1`) comes in as a
message; each reply is logged and kept in key-value under `sent/<id>`."""

from urllib.parse import parse_qs

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.channel import (
    Capabilities, ChatType, InboundMessage, ReceiveMode, StreamStyle, WebhookResponse,
)
from wit_world.imports import clock, kv, log
from wit_world.imports.types import Error_Unsupported


def unsupported(what: str):
    return Err(Error_Unsupported("{{name}} does not support " + what))


class Plugin(exports.Plugin):
    def name(self) -> str:
        return "{{name}}"

    def last_activity(self) -> int:
        return clock.now_ms()

    def restart(self) -> None:
        return None


class Channel(exports.Channel):
    def describe(self) -> Capabilities:
        return Capabilities(ReceiveMode.WEBHOOK, False, False, 4096, StreamStyle.FINAL_ONLY, 0, 0, False, False)

    def start(self, config):
        return None

    def poll(self, cursor, wait_ms):
        raise unsupported("polling (it receives by webhook)")

    def handle_webhook(self, request):
        query = parse_qs(request.query)
        n = kv.increment("next_id", 1)
        message = InboundMessage(
            id=f"in-{n}",
            conversation=query.get("conversation", ["default"])[0],
            chat_type=ChatType.DIRECT,
            thread=None,
            sender=query.get("sender", ["user"])[0],
            sender_name=None,
            sender_is_bot=False,
            mentioned=False,
            reply_to=None,
            text=bytes(request.body).decode("utf-8", "replace"),
            attachments=[],
            reaction=None,
            timestamp=clock.now_ms(),
        )
        return WebhookResponse(200, [], b"ok", [message], [])

    def send(self, message) -> str:
        msg_id = f"out-{kv.increment('next_id', 1)}"
        log.write(log.Level.INFO, "reply", [("conversation", message.conversation), ("text", message.text)])
        kv.set(f"sent/{msg_id}", message.text.encode())
        return msg_id

    def edit(self, conversation, message_id, text, format):
        raise unsupported("editing")

    def draft(self, target, draft_id, text):
        raise unsupported("drafts")

    def typing(self, target):
        raise unsupported("typing indicators")

    def mark_read(self, target):
        raise unsupported("read receipts")

    def fetch_attachment(self, handle):
        raise unsupported("attachments")
