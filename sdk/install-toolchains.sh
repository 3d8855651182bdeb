#!/usr/bin/env bash
# Install the toolchains that build Pincer plugins in languages other than
# Rust, pinned, from the package registries only (PyPI, npm). Idempotent: a
# section whose pinned tools are already installed does nothing, so CI pays
# for an install once per machine.
#
#   sdk/install-toolchains.sh [SECTION...]    # default: every section
#
# Sections: python (componentize-py), js (jco, componentize-js, TypeScript).
# Everything goes under PINCER_TOOLCHAINS (default ~/.cache/pincer/toolchains);
# the build scripts (sdk/python/build.sh, sdk/js/build.sh) look there.
# To add a language, add a `section_<name>` function and its name to SECTIONS.
set -euo pipefail

sdk="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${PINCER_TOOLCHAINS:-$HOME/.cache/pincer/toolchains}"
mkdir -p "$tools"

COMPONENTIZE_PY_VERSION="0.25.1"

need() {
    # need TOOL HOW-TO-INSTALL
    command -v "$1" >/dev/null 2>&1 || {
        echo "error: $1 is missing; $2" >&2
        exit 127
    }
}

# Python: componentize-py in a venv (it bundles CPython for wasm).
section_python() {
    need python3 "install Python 3.10 or later (Debian: apt-get install python3 python3-venv)"
    local venv="$tools/py"
    if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv" || {
            echo "error: python3 -m venv failed; install the venv module (Debian: apt-get install python3-venv)" >&2
            exit 127
        }
        "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
        echo "python: installed $("$venv/bin/componentize-py" --version) into $venv"
    else
        echo "python: $("$venv/bin/componentize-py" --version) already in $venv"
    fi
}

# JavaScript/TypeScript: jco, componentize-js, rolldown and TypeScript from
# sdk/js/tools/package-lock.json (preview2-shim pinned to 0.26.0: 0.26.1
# breaks `jco componentize`).
section_js() {
    need node "install Node.js 20 or later (Debian: apt-get install nodejs)"
    need npm "install npm (Debian: apt-get install npm)"
    local dir="$tools/js" sum
    sum="$(cat "$sdk/js/tools/package.json" "$sdk/js/tools/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$dir/.pincer-lock" 2>/dev/null)" != "$sum" ] || [ ! -x "$dir/node_modules/.bin/jco" ]; then
        mkdir -p "$dir"
        rm -rf "$dir/node_modules"
        cp "$sdk/js/tools/package.json" "$sdk/js/tools/package-lock.json" "$dir/"
        (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
        echo "$sum" > "$dir/.pincer-lock"
        echo "js: installed into $dir:"
    else
        echo "js: already in $dir:"
    fi
    (cd "$dir" && echo "  jco $(node_modules/.bin/jco --version), typescript $(node_modules/.bin/tsc --version | cut -d' ' -f2), componentize-js $(node -p "require('./node_modules/@bytecodealliance/componentize-js/package.json').version"), preview2-shim $(node -p "require('./node_modules/@bytecodealliance/preview2-shim/package.json').version")")
}

# C and Zig: clang/lld/wasi-libc from Debian and Zig from PyPI
# (sdk/toolchains/c-zig.sh; `pincer plugin build` componentizes in-process).
section_c_zig() {
    "$sdk/toolchains/c-zig.sh" >/dev/null
    echo "c/zig: clang, wasi-libc and zig ready (sdk/toolchains/c-zig.sh)"
}

SECTIONS=(python js c_zig)
want=("$@")
[ "${#want[@]}" -gt 0 ] || want=("${SECTIONS[@]}")
for s in "${want[@]}"; do
    if ! declare -F "section_$s" >/dev/null; then
        echo "error: unknown section '$s' (known: ${SECTIONS[*]})" >&2
        exit 2
    fi
    "section_$s"
done
