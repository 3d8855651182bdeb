"""{{name}}: a Pincer tool in Python (componentize-py). Called with `{}` it
answers with a greeting and the host clock's time; edit `invoke`."""

import json

from wit_world import exports
from wit_world.exports.tool import ToolInfo
from wit_world.imports import clock, kv, log


class Plugin(exports.Plugin):
    def name(self) -> str:
        return "{{name}}"

    def last_activity(self) -> int:
        return clock.now_ms()

    def restart(self) -> None:
        return None


class Tool(exports.Tool):
    def describe(self) -> ToolInfo:
        return ToolInfo(
            name="{{name}}",
            description="Says hello and tells the time (scaffolded by `pincer plugin new`).",
            parameters_schema='{"type":"object","properties":{}}',
        )

    def invoke(self, arguments: str) -> str:
        now = clock.now_ms()
        calls = kv.increment("calls", 1)
        log.write(log.Level.INFO, "invoked", [("calls", str(calls))])
        return json.dumps({"greeting": "Hello from {{name}}!", "now_ms": now, "calls": calls})
