"""The plugin's durable key-value store (survives restarts and new versions)."""

import json as _json

from wit_world.imports import kv as _kv

from .errors import host_call


def get(key):
    """The bytes stored under `key`, or None."""
    return host_call(_kv.get, key)


def set(key, value):
    """Store `value` (bytes or str) under `key`."""
    if isinstance(value, str):
        value = value.encode()
    host_call(_kv.set, key, bytes(value))


def delete(key):
    """Remove `key` (a missing key is not an error)."""
    host_call(_kv.delete, key)


def list_keys(prefix=""):
    """Keys starting with `prefix`, in lexical order."""
    return host_call(_kv.list_keys, prefix)


def increment(key, delta=1):
    """Atomically add `delta` to the counter under `key`; the new value."""
    return host_call(_kv.increment, key, int(delta))


def compare_and_swap(key, expected, new):
    """Replace `expected` by `new` (None: absent) atomically; whether it swapped."""
    return host_call(_kv.compare_and_swap, key, expected, new)


def get_json(key, default=None):
    """The JSON value under `key`, or `default`."""
    raw = get(key)
    return default if raw is None else _json.loads(raw)


def set_json(key, value):
    """Store `value` as JSON under `key`."""
    set(key, _json.dumps(value, separators=(",", ":")))
