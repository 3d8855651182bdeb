#!/usr/bin/env bash
# Installs the C and Zig toolchains Pincer's C/Zig plugins build with (issue 11).
#
#   C:   clang-19, lld-19, wasi-libc and the wasm32 compiler-rt from Debian (apt).
#   Zig: the `ziglang` wheel from PyPI, in a venv under ~/.cache/pincer/toolchains/zig.
#
# Idempotent: every step checks first and does nothing when the tool is already there,
# so a second run takes well under a second. The preview1 adapter and the componentizing
# step need nothing here: `pincer plugin build` carries both inside the binary.
#
# Prints the paths it set up; `pincer plugin build` finds them on its own (PATH, then the
# cache directory), so nothing has to be exported.
set -euo pipefail

CACHE="${PINCER_TOOLCHAINS:-$HOME/.cache/pincer/toolchains}"
ZIG_VERSION="${PINCER_ZIG_VERSION:-0.17.1}"
mkdir -p "$CACHE"

log() { printf '[c-zig] %s\n' "$*" >&2; }

# --- C: Debian packages -----------------------------------------------------------------
C_PKGS=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
missing=()
for p in "${C_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    log "missing ${missing[*]} and apt-get is not available: install clang 19, lld 19 and wasi-libc with your package manager"
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing ${missing[*]} (apt)"
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
else
  log "C: clang-19, lld-19, wasi-libc present"
fi

# --- Zig: the ziglang wheel from PyPI, in its own venv ----------------------------------
ZIG_VENV="$CACHE/zig"
if [ -x "$ZIG_VENV/bin/python" ] && "$ZIG_VENV/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIG_VERSION"; then
  log "Zig $ZIG_VERSION present in $ZIG_VENV"
else
  command -v python3 >/dev/null || { log "python3 is needed to install Zig from PyPI"; exit 1; }
  log "installing ziglang==$ZIG_VERSION into $ZIG_VENV (pip)"
  python3 -m venv "$ZIG_VENV"
  "$ZIG_VENV/bin/pip" install --quiet "ziglang==$ZIG_VERSION"
fi
# A `zig` launcher next to the venv so PATH users and `pincer plugin build` find one binary.
mkdir -p "$CACHE/bin"
ZIG_BIN="$(find "$ZIG_VENV/lib" -path '*/ziglang/zig' -type f | head -n1)"
ln -sf "$ZIG_BIN" "$CACHE/bin/zig"
log "zig: $CACHE/bin/zig"

# Zig compiles its wasi-libc and its translate-c tool on first use (minutes);
# do it once here so the first plugin build (or CI test) does not pay for it.
STAMP="$CACHE/zig-warm-$ZIG_VERSION"
if [ ! -f "$STAMP" ]; then
  log "warming Zig's cache (wasi-libc, translate-c; once)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  printf '#include <stdlib.h>\nint pincer_warm(int x);\n' > "$tmp/warm.h"
  printf 'const c = @import("warm.zig");\nexport fn f(x: c_int) c_int { return x + 1; }\n' > "$tmp/main.zig"
  ( cd "$tmp" \
    && "$CACHE/bin/zig" translate-c -target wasm32-wasi -lc warm.h > warm.zig \
    && "$CACHE/bin/zig" build-exe main.zig -lc -target wasm32-wasi -mexec-model=reactor -fno-entry -rdynamic -O ReleaseSmall --cache-dir "$tmp/cache" -femit-bin="$tmp/out.wasm" )
  touch "$STAMP"
fi
echo "$CACHE/bin"
