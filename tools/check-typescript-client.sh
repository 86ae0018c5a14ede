#!/usr/bin/env bash
# Builds the TypeScript client (clients/typescript: types generated from docs/openapi.json,
# compiled with tsc) and runs its tests against the bucketd of a build: `npm ci` (the pinned
# versions of package-lock.json, from the npm registry) then `npm test`.
# Usage: tools/check-typescript-client.sh [build dir, default build]. Run by tools/run-tests.sh.
# Needs node >= 20 and npm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
export BUCKETD_BIN=$build/tools/bucketd/bucketd
[ -x "$BUCKETD_BIN" ] || { echo "check-typescript-client: no $BUCKETD_BIN (build bucketd_server)" >&2; exit 1; }
command -v npm >/dev/null || { echo "check-typescript-client: npm is not installed (node >= 20)" >&2; exit 1; }
cd "$root/clients/typescript"
npm ci --no-audit --no-fund --loglevel=error
# A test that waits forever (a delivery that never comes) fails here instead of hanging CI.
timeout 300 npm test --silent
echo "check-typescript-client: OK"
