#!/usr/bin/env bash
# npm run bench: builds the gateway and the benchmarks, then runs them (see bench/RESULTS.md).
#   bash bench/run.sh          all of them, in the order below
#   bash bench/run.sh imap     bench/imap-bench.ts only (with workers: 2 beside workers: 1, and idle-session RSS by store, SQLite and PostgreSQL: issue 18)
#   bash bench/run.sh smtp     bench/smtp-bench.ts only (with workers: 2 beside workers: 1: issue 18)
#   bash bench/run.sh forward  bench/forward-bench.ts only (forward without download, issue 4)
#   bash bench/run.sh burl     bench/burl-bench.ts only (forward with BURL over a slow link, issue 5; about 3 minutes)
#   bash bench/run.sh futurerelease  bench/futurerelease-bench.ts only (FUTURERELEASE accept rate and release lag, issue 6; about 2 minutes,
#                              more with the release lag by store, SQLite / PostgreSQL / two instances, issue 18: BENCH_LAG_STORES)
#   bash bench/run.sh qresync  bench/qresync-bench.ts only (quick reconnect, full resync vs QRESYNC, 1k/10k/50k messages, issue 7; needs root)
#   bash bench/run.sh fuzz     bench/fuzz.ts only (the fuzz suite of test/helpers/fuzz.ts at BENCH_FUZZ_INPUTS inputs, BENCH_FUZZ_SEED; issue 15)
# Settings come from the environment (BENCH_SECONDS, ...; see the top of each benchmark).
# The PostgreSQL parts start a private server of their own (scripts/postgres.sh, installed by setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
case "$which" in
  imap | smtp | forward | burl | futurerelease | qresync | fuzz | all) ;;
  *)
    echo "usage: bash bench/run.sh [imap|smtp|forward|burl|futurerelease|qresync|fuzz|all]" >&2
    exit 2
    ;;
esac
bash scripts/setup.sh
npx tsc -p bench/tsconfig.json
ulimit -n 65536 2>/dev/null || true
if [ "$which" = imap ] || [ "$which" = all ]; then
  node dist-bench/bench/imap-bench.js
fi
if [ "$which" = smtp ] || [ "$which" = all ]; then
  node dist-bench/bench/smtp-bench.js
fi
if [ "$which" = forward ] || [ "$which" = all ]; then
  node dist-bench/bench/forward-bench.js
fi
if [ "$which" = burl ] || [ "$which" = all ]; then
  node dist-bench/bench/burl-bench.js
fi
if [ "$which" = futurerelease ] || [ "$which" = all ]; then
  node dist-bench/bench/futurerelease-bench.js
fi
if [ "$which" = qresync ] || [ "$which" = all ]; then
  node dist-bench/bench/qresync-bench.js
fi
if [ "$which" = fuzz ] || [ "$which" = all ]; then
  node dist-bench/bench/fuzz.js
fi
