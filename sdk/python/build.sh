#!/usr/bin/env bash
# Build a Python plugin into a WebAssembly component.
#
#   sdk/python/build.sh [PROJECT_DIR] [OUT.wasm]
#
# PROJECT_DIR (default: .) holds app.py and pincer.toml; `kind = "tool"` or
# `kind = "channel"` in pincer.toml picks the world. OUT defaults to
# PROJECT_DIR/<name>.wasm, with the manifest copied next to it, so the pair
# can be dropped into the gateway's plugins directory as it is.
# The toolchain comes from sdk/install-toolchains.sh (PINCER_TOOLCHAINS,
# default ~/.cache/pincer/toolchains).
set -euo pipefail

sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(cd "${1:-.}" && pwd)"
tools="${PINCER_TOOLCHAINS:-$HOME/.cache/pincer/toolchains}"
cpy="$tools/py/bin/componentize-py"
if [ ! -x "$cpy" ]; then
    echo "error: componentize-py is missing ($cpy); install it with: $sdk/../install-toolchains.sh python" >&2
    exit 127
fi
manifest="$project/pincer.toml"
[ -f "$manifest" ] || { echo "error: $manifest is missing" >&2; exit 2; }
[ -f "$project/app.py" ] || { echo "error: $project/app.py is missing" >&2; exit 2; }
kind="$(sed -n 's/^kind *= *"\([a-z]*\)".*/\1/p' "$manifest" | head -1)"
name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -1)"
case "$kind" in
    tool|channel) ;;
    *) echo "error: $manifest must say kind = \"tool\" or kind = \"channel\"" >&2; exit 2 ;;
esac
out="${2:-$project/$name.wasm}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# componentize-py imports the app from the search path; the generated
# bindings (wit_world) are made in memory from sdk/wit.
"$cpy" -d "$sdk/../wit" -w "$kind" componentize -p "$project" -p "$sdk" app -o "$out.tmp"
mv "$out.tmp" "$out"
manifest_out="${out%.wasm}.toml"
[ "$manifest_out" = "$manifest" ] || cp "$manifest" "$manifest_out"
echo "built $out ($(stat -c %s "$out") bytes)"
