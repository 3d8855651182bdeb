"""The host's clock (tests may run the host on a controlled clock)."""

from wit_world.imports import clock as _clock


def now_ms():
    """Milliseconds since the Unix epoch."""
    return _clock.now_ms()
