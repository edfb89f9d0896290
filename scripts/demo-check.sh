#!/usr/bin/env bash
# Runs the README's demo command (scripts/demo.sh) as a new user would, waits for its
# banner, lists alice's INBOX through the gateway with curl over implicit TLS, and stops
# the demo again (SIGTERM to its process group: the gateway drains, the demo's EXIT trap
# stops the legacy stack). CI runs it on a machine where the legacy stack was just
# uninstalled, so it proves that the demo installs everything it needs.
# Exit 0 when the listing came back; otherwise the demo's output is shown.
set -uo pipefail
cd "$(dirname "$0")/.."
readonly WAIT_SECONDS=${DEMO_CHECK_WAIT_SECONDS:-900}
out=$(mktemp)
setsid bash scripts/demo.sh </dev/null >"$out" 2>&1 &
demo_pid=$!
stop_demo() {
  kill -TERM -- "-$demo_pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$demo_pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL -- "-$demo_pid" 2>/dev/null || true
}
fail() {
  echo "demo-check: $*" >&2
  echo "----- demo output -----" >&2
  tail -n 60 "$out" >&2
  stop_demo
  rm -f "$out"
  exit 1
}
deadline=$((SECONDS + WAIT_SECONDS))
until grep -q '^lemonade-gateway demo' "$out"; do
  kill -0 "$demo_pid" 2>/dev/null || fail "the demo exited before its banner"
  [ "$SECONDS" -lt "$deadline" ] || fail "no banner within ${WAIT_SECONDS}s"
  sleep 1
done
port=$(sed -nE 's/.*IMAP TLS: 127\.0\.0\.1:([0-9]+).*/\1/p' "$out" | head -n 1)
[ -n "$port" ] || fail "the banner names no IMAP TLS port"
listing=""
for _ in $(seq 1 30); do
  listing=$(curl -sS -k --max-time 10 --user alice:password "imaps://127.0.0.1:$port/" 2>&1) && break
  listing=""
  sleep 1
done
# curl's LIST answer: '* LIST (\HasNoChildren) "/" INBOX' and the like.
grep -q 'LIST .*INBOX' <<<"$listing" || fail "curl -k imaps://127.0.0.1:$port/ listed no INBOX: $listing"
echo "demo-check: the demo served a listing on 127.0.0.1:$port"
stop_demo
rm -f "$out"
