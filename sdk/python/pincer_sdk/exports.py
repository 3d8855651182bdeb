"""From one plain class to the export classes componentize-py expects.

`app.py` of a tool does `Plugin, Tool = export_tool(MyTool)`; a channel does
`Plugin, Channel = export_channel(MyChannel)`. Exceptions raised by the
methods become the contract's typed `error` (see `errors`).
"""

import json

from .errors import to_err


class ToolPlugin:
    """Base of a tool: set `name`, `description`, `schema` (a dict) and
    implement `call(args: dict) -> JSON value`."""

    name = "tool"
    description = ""
    schema = {"type": "object"}

    def call(self, args):
        raise NotImplementedError


class ChannelPlugin:
    """Base of a channel. Implement `describe()` (a
    `wit_world.exports.channel.Capabilities`), `start(config: dict)`,
    `handle_webhook(request)` and/or `poll(cursor, wait_ms)`, and
    `send(message) -> str`; the rest answer `UnsupportedError`."""

    name = "channel"
    last_contact_ms = 0

    def restart(self):
        pass


def _plugin_class(obj):
    from wit_world import exports as ex

    class Plugin(ex.Plugin):
        def name(self):
            return obj.name

        def last_activity(self):
            return int(getattr(obj, "last_contact_ms", 0))

        def restart(self):
            try:
                if hasattr(obj, "restart"):
                    obj.restart()
            except Exception as e:  # noqa: BLE001 - every failure is typed for the host
                raise to_err(e) from None

    return Plugin


def export_tool(cls):
    """The `(Plugin, Tool)` export classes for tool class `cls`."""
    from wit_world import exports as ex
    from wit_world.exports import tool as wt

    obj = cls()

    class Tool(ex.Tool):
        def describe(self):
            return wt.ToolInfo(obj.name, obj.description, json.dumps(obj.schema))

        def invoke(self, arguments):
            try:
                args = json.loads(arguments) if arguments.strip() else {}
                if not isinstance(args, dict):
                    raise TypeError("arguments must be a JSON object")
                return json.dumps(obj.call(args))
            except Exception as e:  # noqa: BLE001
                raise to_err(e) from None

    return _plugin_class(obj), Tool


def export_channel(cls):
    """The `(Plugin, Channel)` export classes for channel class `cls`."""
    from wit_world import exports as ex

    from .errors import UnsupportedError

    obj = cls()

    def call(method, *args):
        f = getattr(obj, method, None)
        try:
            if f is None:
                raise UnsupportedError(f"{obj.name} does not support {method}")
            return f(*args)
        except Exception as e:  # noqa: BLE001
            raise to_err(e) from None

    class Channel(ex.Channel):
        def describe(self):
            return obj.describe()

        def start(self, config):
            return call("start", dict(config))

        def poll(self, cursor, wait_ms):
            return call("poll", cursor, wait_ms)

        def handle_webhook(self, request):
            return call("handle_webhook", request)

        def send(self, message):
            return call("send", message)

        def edit(self, conversation, message_id, text, format):
            return call("edit", conversation, message_id, text, format)

        def draft(self, target, draft_id, text):
            return call("draft", target, draft_id, text)

        def typing(self, target):
            return call("typing", target)

        def mark_read(self, target):
            return call("mark_read", target)

        def fetch_attachment(self, handle):
            return call("fetch_attachment", handle)

    return _plugin_class(obj), Channel
