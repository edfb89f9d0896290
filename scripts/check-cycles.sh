#!/usr/bin/env bash
# Fails (exit 1) when the TypeScript modules under DIR (default src/) import each other in
# a cycle, type-only imports included: a cycle means a lower layer reaches back up (issue
# 17), even when the compiler erases the import. Part of `npm run lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-src}
npx --no-install dpdm --no-tree --no-warning --exit-code circular:1 "$dir/**/*.ts"
