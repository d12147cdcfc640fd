#!/usr/bin/env bash
# Fuzz smoke: each cargo-fuzz target for a short bounded time on top of the
# corpus replay that `cargo test` already does on stable (tests/fuzz_corpus.rs).
# Long runs are by hand: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -- -dict=dict`.
set -euo pipefail
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd fuzz
export RUSTC_BOOTSTRAP=1
for target in topic_parse pattern_parse matcher_diff envelope_decode; do
    # Work on a copy so CI never rewrites the checked-in corpus.
    work=$(mktemp -d)
    cp -r "corpus/${target}/." "$work/"
    cargo fuzz run "$target" "$work" -- -max_total_time="$SECONDS_PER_TARGET" -dict=dict -timeout=10
    rm -rf "$work"
done
