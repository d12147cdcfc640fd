#!/usr/bin/env bash
set -euo pipefail
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
# Every public item carries an example: checked on rustdoc's JSON output
# (unstable, hence RUSTC_BOOTSTRAP; it is read by the script only).
RUSTC_BOOTSTRAP=1 cargo rustdoc --all-features --lib -- -Z unstable-options --output-format json
python3 .ci/doc_examples.py target/doc/topicbus.json
