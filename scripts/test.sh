#!/usr/bin/env bash
# The one test command (README): sets up what is missing, runs every tap test against a
# real Dovecot and Postfix started by the tests themselves, and ends with a plain
# "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
npm run --silent typecheck || { echo "0 passed, 1 failed"; exit 1; }
npm run --silent lint || { echo "0 passed, 1 failed"; exit 1; }
log=$(mktemp)
# Every gateway the tests start copies its log here (test/helpers/gateway.ts); after the
# suite, no log line of the whole run may hold a password or a URLAUTH token.
LEMONADE_LOG_DIR=$(mktemp -d)
export LEMONADE_LOG_DIR
npx tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
logs_clean=1
node scripts/check-logs.mjs "$LEMONADE_LOG_DIR" || logs_clean=0
rm -rf "$LEMONADE_LOG_DIR"
# tap's closing summary: "# { total: N, pass: N, fail: N, ... }"
summary=$(grep -E '^# \{ total:' "$log" | tail -n 1)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
total=$(sed -nE 's/.*total: ([0-9]+).*/\1/p' <<<"$summary")
pass=${pass:-0}; fail=${fail:-0}; total=${total:-0}
# Anything counted neither pass nor fail (todo, skip) is reported; a run that tap failed counts at least one failure.
if [ "$status" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
if [ "$logs_clean" -eq 0 ]; then fail=$((fail + 1)); status=1; fi
rm -f "$log"
echo "$pass passed, $fail failed"
exit "$status"
