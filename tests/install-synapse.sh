#!/usr/bin/env bash
# Install the Synapse homeserver the Matrix tests start (tests/src/synapse.rs)
# from PyPI into a virtualenv, pinned; idempotent (a matching install is
# kept). Goes to PINCER_SYNAPSE_VENV (default ~/.cache/pincer/synapse/venv).
set -euo pipefail

SYNAPSE_VERSION="1.163.2"
venv="${PINCER_SYNAPSE_VENV:-$HOME/.cache/pincer/synapse/venv}"

have="$("$venv/bin/python" -c 'import synapse; print(synapse.__version__)' 2>/dev/null || true)"
if [ "$have" = "$SYNAPSE_VERSION" ]; then
    echo "synapse: $have already in $venv"
    exit 0
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" || {
    echo "error: python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv)" >&2
    exit 127
}
# Wheels only: Synapse's Rust extension is prebuilt for CPython 3.10+.
"$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    "matrix-synapse==$SYNAPSE_VERSION"
echo "synapse: installed $("$venv/bin/python" -c 'import synapse; print(synapse.__version__)') into $venv"
