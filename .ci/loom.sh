#!/usr/bin/env bash
# loom model checks (loom-tests/README.md lists what each model proves).
# Release with debug assertions, preemptions bounded so CI stays in budget.
set -euo pipefail
RUSTFLAGS="--cfg topicbus_loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=2 \
    cargo test -p topicbus-loom-tests --release --target-dir target/loom
