#!/usr/bin/env bash
# Every example runs (quick modes where they have one). Reports go to target/
# so CI never rewrites perf-reports/.
set -euo pipefail
cargo run --release --example loadgen -- --quick --out target/ci-perf-reports
cargo run --release --example matcher_report -- --quick --out target/ci-perf-reports
cargo run --release --example basic
cargo run --release --example worker_queue
cargo run --release --example shutdown
cargo run --release --example error_handling
cargo run --release --example request_reply
cargo run --release --example order_processing
cargo run --release --example topic_routing
cargo run --release --example email_notifications
cargo run --release --example cache_invalidation
cargo run --release --example metrics --features prometheus
cargo run --release --example redis_bridge --features redis
cargo run --release --example postgres_queue --features postgres
cargo run --release --example audit_log --features postgres
cargo run --release --example failover --features redis,postgres
