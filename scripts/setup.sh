#!/usr/bin/env bash
# Everything a fresh machine needs before the demo or the tests: Debian packages for the
# legacy stack and for the PostgreSQL the store tests start (as root), npm dependencies,
# and a build of dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/legacy-stack.sh install
bash scripts/postgres.sh install
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
