#!/usr/bin/env bash
# npm run bench: builds the gateway and the benchmark, then runs it (see bench/RESULTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p bench/tsconfig.json
ulimit -n 65536 2>/dev/null || true
node dist-bench/bench/imap-bench.js "$@"
