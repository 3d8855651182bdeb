"""Pincer plugin SDK for Python (componentize-py).

A thin layer over the bindings componentize-py generates from
`sdk/wit` (the `pincer:plugin@0.2.0` worlds plus `wasi:http`):

- `http.request(...)`: outbound HTTP through `wasi:http` (the host checks
  allowed hosts and fills in secret placeholders);
- `kv`: the plugin's durable key-value store (bytes or JSON);
- `log`: structured log lines in the host's log, tagged with the plugin;
- `secrets.placeholder(name)`, `clock.now_ms()`;
- typed errors (`ConfigError`, `AuthError`, `TransientError`, `RateLimited`,
  `PermanentError`, `UnsupportedError`) that reach the host as the contract's
  `error` variant;
- `export_tool(cls)` / `export_channel(cls)`: turn one plain class into the
  `Plugin` and `Tool`/`Channel` classes componentize-py expects in `app.py`.
"""

from . import clock, http, kv, log, secrets
from .errors import (
    AuthError,
    ConfigError,
    FormattingError,
    PermanentError,
    PincerError,
    RateLimited,
    TransientError,
    UnsupportedError,
)
from .exports import ChannelPlugin, ToolPlugin, export_channel, export_tool

__all__ = [
    "clock",
    "http",
    "kv",
    "log",
    "secrets",
    "PincerError",
    "ConfigError",
    "AuthError",
    "TransientError",
    "RateLimited",
    "PermanentError",
    "UnsupportedError",
    "FormattingError",
    "ToolPlugin",
    "ChannelPlugin",
    "export_tool",
    "export_channel",
]
