#!/usr/bin/env bash
# OpenClaw's CLI (`openclaw tui`, `openclaw gateway call`, `openclaw gateway
# run`) at the pinned version, installed with its dependencies into a cache
# outside the repository, run with Node 24 (tests/browser/fetch-node.sh).
# The package tarball is the one fetch-control-ui.sh verified against the
# registry's sha512; its dependencies come from the npm registry through
# npm with Node 24's npm. No install scripts run. Idempotent.
#
# Prints two lines on stdout, the last two: the node binary, then the
# `openclaw.mjs` entry point. Run it as `NODE ENTRY tui --url ...`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=2026.9.6
CACHE="${PINCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pincer}/openclaw"
DEST="$CACHE/cli-$VERSION"
ENTRY="$DEST/node_modules/openclaw/openclaw.mjs"

node="$("$here/fetch-node.sh" | tail -n1)"
if [ -f "$ENTRY" ] && [ -f "$DEST/.installed" ]; then
    echo "$node"
    echo "$ENTRY"
    exit 0
fi

# Verifies the tarball (and fetches it when missing).
"$here/fetch-control-ui.sh" >/dev/null
tarball="$CACHE/openclaw-$VERSION.tgz"
# The wheel's bin/npm shim is a symlink turned into a copy; run npm's own
# entry point with Node 24 instead.
npm_cli="$(dirname "$node")/../lib/node_modules/npm/bin/npm-cli.js"

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
echo '{"name":"pincer-openclaw-cli","private":true}' > "$DEST.tmp/package.json"
echo "installing openclaw@$VERSION and its dependencies into $DEST" >&2
(cd "$DEST.tmp" && PATH="$(dirname "$node"):$PATH" "$node" "$npm_cli" install "$tarball" \
    --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
if ! "$node" "$ENTRY" --version >/dev/null 2>&1; then
    echo "the installed openclaw CLI does not start: $node $ENTRY --version" >&2
    exit 1
fi
touch "$DEST/.installed"
echo "$node"
echo "$ENTRY"
