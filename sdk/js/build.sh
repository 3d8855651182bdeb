#!/usr/bin/env bash
# Build a JavaScript or TypeScript plugin into a WebAssembly component.
#
#   sdk/js/build.sh [PROJECT_DIR] [OUT.wasm]
#
# PROJECT_DIR (default: .) holds pincer.toml and plugin.ts (or plugin.js),
# plus any modules it imports. `kind = "tool"` or `kind = "channel"` in
# pincer.toml picks the world. Steps: `jco guest-types` writes the types of
# the world's imports and exports, `tsc` type-checks and compiles the sources
# together with the SDK (src/pincer.ts, imported as ./pincer.js), and
# `jco componentize` bundles the result into a component. OUT defaults to
# PROJECT_DIR/<name>.wasm, with the manifest copied next to it.
# The tools come from sdk/install-toolchains.sh (PINCER_TOOLCHAINS, default
# ~/.cache/pincer/toolchains).
set -euo pipefail

sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(cd "${1:-.}" && pwd)"
tools="${PINCER_TOOLCHAINS:-$HOME/.cache/pincer/toolchains}"
bin="$tools/js/node_modules/.bin"
for t in jco tsc rolldown; do
    if [ ! -x "$bin/$t" ]; then
        echo "error: $t is missing ($bin/$t); install it with: $sdk/../install-toolchains.sh js" >&2
        exit 127
    fi
done
command -v node >/dev/null || { echo "error: node is missing; install Node.js 20 (Debian: apt-get install nodejs)" >&2; exit 127; }
manifest="$project/pincer.toml"
[ -f "$manifest" ] || { echo "error: $manifest is missing" >&2; exit 2; }
kind="$(sed -n 's/^kind *= *"\([a-z]*\)".*/\1/p' "$manifest" | head -1)"
name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "$manifest" | head -1)"
case "$kind" in
    tool|channel) ;;
    *) echo "error: $manifest must say kind = \"tool\" or kind = \"channel\"" >&2; exit 2 ;;
esac
entry=""
for e in plugin.ts plugin.js; do [ -f "$project/$e" ] && entry="$e" && break; done
[ -n "$entry" ] || { echo "error: $project has neither plugin.ts nor plugin.js" >&2; exit 2; }
out="${2:-$project/$name.wasm}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
find "$project" -maxdepth 1 \( -name '*.ts' -o -name '*.js' \) -exec cp {} "$work/src/" \;
cp "$sdk/src/pincer.ts" "$sdk/src/globals.d.ts" "$work/src/"
"$bin/jco" guest-types "$sdk/../wit" --world-name "pincer:sdk/$kind" -o "$work/types" >/dev/null
cat > "$work/tsconfig.json" <<JSON
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ES2022",
    "moduleResolution": "bundler",
    "lib": ["ES2022", "ESNext.Disposable"],
    "strict": true,
    "allowJs": true,
    "checkJs": false,
    "skipLibCheck": true,
    "types": [],
    "rootDir": "src",
    "outDir": "out"
  },
  "include": ["src", "types"]
}
JSON
"$bin/tsc" -p "$work/tsconfig.json"
# One module for componentize-js: the plugin and the SDK bundled, the
# component imports (pincer:*, wasi:*) left as imports.
cat > "$work/rolldown.config.mjs" <<JS
export default {
  input: "$work/out/${entry%.*}.js",
  external: [/^(pincer|wasi):/],
  platform: "neutral",
  output: { file: "$work/bundle.js", format: "esm" },
};
JS
"$bin/rolldown" -c "$work/rolldown.config.mjs" >/dev/null
# --disable all: no WASI beyond what the world imports (no clocks, random,
# stdio or fetch of StarlingMonkey's own); outbound HTTP goes through the
# SDK's wasi:http imports.
"$bin/jco" componentize "$work/bundle.js" --wit "$sdk/../wit" --world-name "pincer:sdk/$kind" \
    --disable all --out "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
manifest_out="${out%.wasm}.toml"
[ "$manifest_out" = "$manifest" ] || cp "$manifest" "$manifest_out"
echo "built $out ($(stat -c %s "$out") bytes)"
