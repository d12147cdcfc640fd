#!/usr/bin/env bash
# The long versions of CI's bounded checks, run by hand; results go to
# perf-reports/ (see perf-reports/proof.md). Each takes one argument:
#
#   .ci/long.sh fuzz [seconds]    every fuzz target (default 1800 s each, all
#                                 at once), growing fuzz/corpus/, then
#                                 minimised with `cargo fuzz cmin`
#   .ci/long.sh chaos [seconds]   the chaos accounting test for that long
#                                 (default 240 s: chaos for half, then the
#                                 shutdown; the ledger holds every settlement,
#                                 about 30 MB a second of chaos), release build
#   .ci/long.sh soak [seconds]    the load generator's soak (default 3600 s)
#                                 at 100 K msgs/s
#   .ci/long.sh loom [bound]      the loom models with a higher preemption
#                                 bound (default 3; CI uses 2)
#   .ci/long.sh sanitizers        what CI runs: ASan/LSan tests, memcheck
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: .ci/long.sh fuzz|chaos|soak|loom|sanitizers [arg]}
case "$what" in
fuzz)
    secs=${2:-1800}
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    targets=(topic_parse pattern_parse matcher_diff envelope_decode)
    cargo fuzz build
    for t in "${targets[@]}"; do
        cargo fuzz run "$t" -- -max_total_time="$secs" -dict=dict -timeout=10 \
            -print_final_stats=1 > "../target/fuzz-$t.log" 2>&1 &
    done
    wait
    for t in "${targets[@]}"; do
        cargo fuzz cmin "$t" -- -dict=dict
        tail -n 12 "../target/fuzz-$t.log"
    done
    ;;
chaos)
    CHAOS_SECS=${2:-240} cargo test --release --test chaos -- --nocapture
    ;;
soak)
    cargo run --release --example loadgen -- --scenario soak \
        --soak-secs "${2:-3600}" --soak-rate 100000
    ;;
loom)
    RUSTFLAGS="--cfg topicbus_loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=${2:-3} \
        cargo test -p topicbus-loom-tests --release --target-dir target/loom
    ;;
sanitizers)
    bash .ci/sanitizers.sh
    ;;
*)
    echo "unknown: $what" >&2
    exit 2
    ;;
esac
