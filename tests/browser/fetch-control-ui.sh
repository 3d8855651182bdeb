#!/usr/bin/env bash
# Fetch OpenClaw's Control UI (the `openclaw` npm package's dist/control-ui)
# at a pinned version, verified against the registry's sha512, into a cache
# outside the repository. Idempotent: a second run only checks the cache.
# No install scripts run (`npm pack` downloads the tarball only).
#
# Prints the Control UI directory on its last line of stdout.
#
#   tests/browser/fetch-control-ui.sh            # -> ~/.cache/pincer/openclaw/2026.9.6/package/dist/control-ui
#   PINCER_CACHE=/somewhere tests/browser/fetch-control-ui.sh
set -euo pipefail

VERSION=2026.9.6
# From `npm view openclaw@2026.9.6 dist.integrity`.
INTEGRITY='sha512-Ie0kyQSCVfFqixsgVg39vevUDq01Ch5u3+7Yu5Y3qARczmdAe+lzp8bVnO9925rHiW/+CFp70zfORCyPmCH31g=='

CACHE="${PINCER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pincer}/openclaw"
TARBALL="$CACHE/openclaw-$VERSION.tgz"
DEST="$CACHE/$VERSION"
UI="$DEST/package/dist/control-ui"

integrity_of() {
    echo "sha512-$(openssl dgst -sha512 -binary "$1" | base64 -w0)"
}

if [ -f "$UI/index.html" ] && [ -f "$DEST/.verified" ]; then
    echo "$UI"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -f "$TARBALL" ] || [ "$(integrity_of "$TARBALL")" != "$INTEGRITY" ]; then
    rm -f "$TARBALL"
    echo "fetching openclaw@$VERSION from the npm registry" >&2
    (cd "$CACHE" && npm pack "openclaw@$VERSION" --ignore-scripts --silent >/dev/null)
fi
got="$(integrity_of "$TARBALL")"
if [ "$got" != "$INTEGRITY" ]; then
    echo "openclaw-$VERSION.tgz: integrity mismatch (got $got, want $INTEGRITY)" >&2
    rm -f "$TARBALL"
    exit 1
fi

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
tar -xzf "$TARBALL" -C "$DEST.tmp" package/dist/control-ui package/docs package/package.json
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
touch "$DEST/.verified"
echo "$UI"
