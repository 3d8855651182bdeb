"""Typed errors: raise one from a plugin method and the host sees the
matching `pincer:plugin/types.error` case (and retries, or not, by kind)."""

from componentize_py_types import Err
from wit_world.imports import pincer_plugin_types as t


class PincerError(Exception):
    """Base of the typed errors. Any other exception becomes `permanent`."""

    def to_wit(self):
        return t.Error_Permanent(str(self))


class ConfigError(PincerError):
    """The plugin's configuration is missing or invalid; retrying will not help."""

    def to_wit(self):
        return t.Error_Config(str(self))


class AuthError(PincerError):
    """Credentials were rejected."""

    def to_wit(self):
        return t.Error_Auth(str(self))


class TransientError(PincerError):
    """Temporary failure (network, 5xx, timeout): the host retries with backoff."""

    def to_wit(self):
        return t.Error_Transient(str(self))


class RateLimited(PincerError):
    """The platform rate-limited us: the host retries after `retry_after_ms`."""

    def __init__(self, message, retry_after_ms=1000):
        super().__init__(message)
        self.retry_after_ms = int(retry_after_ms)

    def to_wit(self):
        return t.Error_RateLimited(t.RateLimit(self.retry_after_ms, str(self)))


class PermanentError(PincerError):
    """The request can never succeed (bad input); the host does not retry."""


class UnsupportedError(PincerError):
    """The operation is not supported by this plugin."""

    def to_wit(self):
        return t.Error_Unsupported(str(self))


class FormattingError(PincerError):
    """The platform rejected the formatting; the host resends as plain text."""

    def to_wit(self):
        return t.Error_Formatting(str(self))


_FROM_WIT = {
    t.Error_Config: ConfigError,
    t.Error_Auth: AuthError,
    t.Error_Transient: TransientError,
    t.Error_Permanent: PermanentError,
    t.Error_Unsupported: UnsupportedError,
    t.Error_Formatting: FormattingError,
}


def from_host(err):
    """The typed error for an `Err` raised by a host import."""
    value = getattr(err, "value", err)
    if isinstance(value, t.Error_RateLimited):
        return RateLimited(value.value.message, value.value.retry_after_ms)
    cls = _FROM_WIT.get(type(value))
    if cls is not None:
        return cls(value.value)
    return PermanentError(str(value))


def host_call(fn, *args):
    """Call a host import, turning its `Err` into a typed `PincerError`."""
    try:
        return fn(*args)
    except Err as e:
        raise from_host(e) from None


def to_err(exc):
    """The `Err` to raise towards the host for any exception."""
    if isinstance(exc, Err):
        return exc
    if isinstance(exc, PincerError):
        return Err(exc.to_wit())
    return Err(t.Error_Permanent(f"{type(exc).__name__}: {exc}"))
