"""A Pincer tool in Python: build with `../build.sh .` (or
`sdk/python/build.sh path/to/project`), then copy hello-py.wasm and
hello-py.toml into the gateway's plugins directory."""

import pincer_sdk as pincer
from pincer_sdk import clock, kv


class Hello(pincer.ToolPlugin):
    name = "hello-py"
    description = "Greets someone and tells the host's time."
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "additionalProperties": False,
    }

    def call(self, args):
        who = args.get("name") or "world"
        calls = kv.increment("calls")
        return {"greeting": f"Hello, {who}!", "now_ms": clock.now_ms(), "calls": calls}


Plugin, Tool = pincer.export_tool(Hello)
