#!/usr/bin/env bash
set -euo pipefail
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The loom models only compile under their cfg: lint them there too.
RUSTFLAGS="--cfg topicbus_loom" cargo clippy -p topicbus-loom-tests --all-targets \
    --target-dir target/loom -- -D warnings
