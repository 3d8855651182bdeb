"""py-relay: a Pincer channel written in Python with the `pincer_sdk` helper
layer (`export_channel`, `http`, `secrets`, `kv`, `log`, typed errors).

In: the host checks `X-Relay-Token` against the `push_token` secret, then
`handle_webhook` gets the push: one message or `{"messages": [...]}`, each
`{conversation, sender, text, id?, sender_name?, group?, thread?}`. A push
that is not JSON, or a message without its required fields, is answered 400
with the reason (the platform should not retry it).
Out: `send` POSTs `{conversation, text, thread, reply_to, markdown}` to the
configured `reply_url` with `authorization: Bearer <api_token>` (filled in by
the host) and takes the platform's message id from the answer's `id`.
Failures map to the contract's errors through `raise_for_status()`: 429
rate-limited (Retry-After), 401/403 auth, 5xx transient, other 4xx permanent.
"""

import json

import pincer_sdk as pincer
from pincer_sdk import ConfigError, PermanentError, clock, http, kv, log, secrets
from wit_world.exports.channel import (
    Capabilities,
    ChatType,
    InboundMessage,
    ReceiveMode,
    StreamStyle,
    TextFormat,
    WebhookResponse,
)

JSON = [("content-type", "application/json")]


def _answer(status, body):
    return WebhookResponse(status, JSON, json.dumps(body).encode(), [], [])


def _str(push, key, required=True):
    v = push.get(key)
    if isinstance(v, str) and v:
        return v
    if required:
        raise PermanentError(f"each message needs a non-empty string `{key}`")
    return None


def _inbound(push):
    if not isinstance(push, dict):
        raise PermanentError("each message must be a JSON object")
    conversation = _str(push, "conversation")
    sender = _str(push, "sender")
    text = push.get("text")
    if not isinstance(text, str):
        raise PermanentError("each message needs a string `text`")
    group = push.get("group") is True
    # Without an id from the platform a counter keeps ids unique (the host
    # deduplicates redeliveries by id).
    msg_id = _str(push, "id", required=False) or f"in-{kv.increment('inbound-seq')}"
    return InboundMessage(
        id=msg_id,
        conversation=conversation,
        chat_type=ChatType.GROUP if group else ChatType.DIRECT,
        thread=_str(push, "thread", required=False),
        sender=sender,
        sender_name=_str(push, "sender_name", required=False),
        sender_is_bot=False,
        mentioned=not group,
        reply_to=None,
        text=text,
        attachments=[],
        reaction=None,
        timestamp=clock.now_ms(),
    )


class Relay(pincer.ChannelPlugin):
    name = "py-relay"

    def __init__(self):
        self.reply_url = ""
        self.max_length = 2000

    def describe(self):
        return Capabilities(
            ReceiveMode.WEBHOOK, False, False, self.max_length,
            StreamStyle.FINAL_ONLY, 0, 0, False, False,
        )

    def start(self, config):
        url = config.get("reply_url", "")
        if not url.startswith(("http://", "https://")):
            raise ConfigError("reply_url must be an http(s) URL")
        try:
            max_length = int(config.get("max_message_length", "2000"))
        except ValueError:
            max_length = 0
        if max_length < 1:
            raise ConfigError("max_message_length must be a positive integer")
        self.reply_url = url
        self.max_length = max_length
        log.info("py-relay started", account=config.get("account", ""), reply_url=url)

    def handle_webhook(self, request):
        if request.verified != "shared-header":
            raise pincer.AuthError("push was not verified by the host")
        try:
            body = json.loads(bytes(request.body))
        except ValueError:
            log.warn("push refused", error="not JSON")
            return _answer(400, {"ok": False, "error": "push body is not JSON"})
        pushes = body.get("messages") if isinstance(body, dict) and "messages" in body else [body]
        try:
            if not isinstance(pushes, list):
                raise PermanentError("`messages` must be a list")
            messages = [_inbound(p) for p in pushes]
        except PermanentError as e:
            log.warn("push refused", error=str(e))
            return _answer(400, {"ok": False, "error": str(e)})
        self.last_contact_ms = clock.now_ms()
        log.debug("push received", messages=len(messages))
        response = _answer(200, {"ok": True, "received": len(messages)})
        response.messages = messages
        return response

    def send(self, message):
        if not self.reply_url:
            raise ConfigError("not started: reply_url unknown")
        headers = {}
        if secrets.exists("api_token"):
            headers["authorization"] = "Bearer " + secrets.placeholder("api_token")
        payload = {
            "conversation": message.conversation,
            "text": message.text,
            "thread": message.thread,
            "reply_to": message.reply_to,
            "markdown": message.format == TextFormat.MARKDOWN,
        }
        resp = http.post(self.reply_url, headers=headers, json=payload, timeout_ms=10_000)
        resp.raise_for_status()
        self.last_contact_ms = clock.now_ms()
        try:
            sent = resp.json()
        except PermanentError:
            sent = None
        msg_id = sent.get("id") if isinstance(sent, dict) else None
        if not isinstance(msg_id, str) or not msg_id:
            msg_id = f"out-{kv.increment('outbound-seq')}"
        log.info("reply sent", conversation=message.conversation, id=msg_id)
        return msg_id


Plugin, Channel = pincer.export_channel(Relay)
