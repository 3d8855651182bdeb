#!/usr/bin/env bash
# The whole test suite on both stores (the README's test command and
# .ci/run call it after tests/setup.sh):
#
# 1. `cargo test --workspace`: every crate's tests, the end-to-end tests'
#    gateways on SQLite files (the default store);
# 2. the end-to-end tests (tests/tests/*.rs) again with
#    PINCER_TEST_STORE=postgres: every test gateway on its own database of
#    one throwaway PostgreSQL server per test binary (see
#    tests/src/test_store.rs). Not repeated: the tests that run on
#    PostgreSQL already (store_postgres*, cluster_*), the SQLite-only
#    ones listed in tests/src/test_store.rs (hardening_store,
#    webhooks_delivery) and the language toolchain tests (plugin_new,
#    plugin_check*, guest_* but guest_python_channel), where the store plays
#    no part.
#
# Arguments go to both `cargo test` runs (e.g. --locked --no-fail-fast).
# Both passes run even when the first fails; the exit status fails if
# either did. PINCER_TEST_PASSES=sqlite or =postgres runs only that pass.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

passes="${PINCER_TEST_PASSES:-sqlite postgres}"
status=0

if [[ " $passes " == *" sqlite "* ]]; then
    echo "--- cargo test --workspace $* (SQLite)"
    start=$SECONDS
    cargo test --workspace "$@" || status=1
    echo "--- SQLite pass: $((SECONDS - start)) s"
fi

if [[ " $passes " == *" postgres "* ]]; then
    targets=()
    for f in tests/tests/*.rs; do
        name="$(basename "$f" .rs)"
        case "$name" in
        # Already on PostgreSQL, or only meaningful on SQLite (see
        # tests/src/test_store.rs).
        store_postgres* | cluster_* | hardening_store | webhooks_delivery) continue ;;
        # Toolchain tests: they build plugins in other languages and check
        # what the builders and `pincer plugin new|build|check` produce; the
        # store plays no part (guest_python_channel, which drives a channel
        # through the durable inbox, does run on PostgreSQL).
        plugin_new | plugin_check | plugin_check_cases | guest_c | guest_zig | guest_js | guest_js_big | guest_python | guest_plain_js | guest_trap_names | issue11_gaps) continue ;;
        esac
        targets+=(--test "$name")
    done
    echo "--- cargo test -p pincer-tests ($((${#targets[@]} / 2)) end-to-end test files) $* (PostgreSQL)"
    start=$SECONDS
    PINCER_TEST_STORE=postgres cargo test -p pincer-tests "${targets[@]}" "$@" || status=1
    echo "--- PostgreSQL pass: $((SECONDS - start)) s"
fi

exit "$status"
