#!/usr/bin/env bash
# What the adapter tests need, installed on the clean CI machine: the
# tests start their own servers (unix sockets, temporary directories), and
# fail under CI=true when a binary is missing.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
redis-server --version
