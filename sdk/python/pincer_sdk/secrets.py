"""Secrets stay in the host: put `placeholder(name)` where the value belongs
in an outgoing request (the places the manifest binds the secret to)."""

from wit_world.imports import secrets as _secrets


def exists(name):
    """Whether the operator granted (or the host generated) secret `name`."""
    return _secrets.exists(name)


def placeholder(name):
    """The text to put where secret `name`'s value belongs."""
    return _secrets.placeholder(name)
