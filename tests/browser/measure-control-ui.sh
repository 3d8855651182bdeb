#!/usr/bin/env bash
# The Control UI measurement (issue 10): OpenClaw's Control UI in headless
# Chromium against Pincer (`pincer serve --control-ui DIR`, echo model) and
# against OpenClaw's own gateway (`openclaw gateway run`, Node 24), in the
# same run, both on loopback. Prints each run's figures as JSON lines and a
# summary per gateway (tests/browser/measure-control-ui.mjs).
#
#   tests/browser/measure-control-ui.sh [PINCER_BINARY] [RUNS]
#
# PINCER_BINARY defaults to target/release/pincer (build it with
# `cargo build --release -p pincer`).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
pincer="${1:-$root/target/release/pincer}"
runs="${2:-5}"
token="measure-$$"
ui="$("$here/fetch-control-ui.sh" | tail -n1)"
mapfile -t cli < <("$here/fetch-openclaw-cli.sh" | tail -n2)
node="${cli[0]}"
openclaw="${cli[1]}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "no answer from $1" >&2
    return 1
}
page_url() { echo "http://127.0.0.1:$1/?gatewayUrl=ws%3A%2F%2F127.0.0.1%3A$1#token=$token"; }

p_port="$(free_port)"
"$pincer" serve --data-dir "$work/pincer" --listen "127.0.0.1:$p_port" --token "$token" \
    --control-ui "$ui" >"$work/pincer.log" 2>&1 &
pids+=($!)
o_port="$(free_port)"
HOME="$work/openclaw-home" "$node" "$openclaw" gateway run --port "$o_port" --bind loopback \
    --auth token --token "$token" --allow-unconfigured >"$work/openclaw.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$p_port/readyz"
wait_http "http://127.0.0.1:$o_port/"

cd "$here"
echo "## pincer ($pincer)"
node measure-control-ui.mjs "{\"url\":\"$(page_url "$p_port")\",\"runs\":$runs,\"send\":true}"
echo "## openclaw gateway ($("$node" "$openclaw" --version 2>/dev/null | head -n1), node $("$node" --version))"
node measure-control-ui.mjs "{\"url\":\"$(page_url "$o_port")\",\"runs\":$runs}"
