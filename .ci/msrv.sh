#!/usr/bin/env bash
# The declared MSRV against what the dependency graph needs (see msrv.py).
set -euo pipefail
python3 .ci/msrv.py
