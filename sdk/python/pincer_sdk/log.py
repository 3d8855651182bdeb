"""Structured log lines in the host's log, tagged with the plugin's name."""

from wit_world.imports import log as _log


def _write(level, message, fields):
    _log.write(level, str(message), [(str(k), str(v)) for k, v in fields.items()])


def trace(message, **fields):
    _write(_log.Level.TRACE, message, fields)


def debug(message, **fields):
    _write(_log.Level.DEBUG, message, fields)


def info(message, **fields):
    _write(_log.Level.INFO, message, fields)


def warn(message, **fields):
    _write(_log.Level.WARN, message, fields)


def error(message, **fields):
    _write(_log.Level.ERROR, message, fields)
