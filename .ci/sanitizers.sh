#!/usr/bin/env bash
# AddressSanitizer (with LeakSanitizer) over the library, integration and
# example tests; then valgrind memcheck over the runnable examples (all of
# them finish in seconds under it). Any report fails the step.
# Doctests are not instrumented (rustdoc takes its own flags) and run
# uninstrumented in the test step.
set -euo pipefail
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" ASAN_OPTIONS="detect_leaks=1" \
    cargo test --target x86_64-unknown-linux-gnu --target-dir target/asan \
    --all-features --lib --tests

if ! command -v valgrind >/dev/null 2>&1; then
    apt-get install -y valgrind >/dev/null
fi
cargo build --release --examples
for example in basic worker_queue shutdown error_handling request_reply order_processing metrics \
    topic_routing email_notifications cache_invalidation; do
    echo "memcheck: ${example}"
    valgrind --tool=memcheck --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect "target/release/examples/${example}" >/dev/null
done
