#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (SQLite, PostgreSQL, MariaDB), the web unit
# tests, and the browser tests against the real binary. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "==> checking database services"
pg_url=${WORKBENCH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL is not reachable at 127.0.0.1:5432 (needed by the database tests)" >&2
  exit 1
fi

scripts/install-chromium.sh
scripts/build-web.sh
if [ -x scripts/fetch-model.sh ]; then
  scripts/fetch-model.sh
fi
# The SwanLab SDK for the offline-mode training test.
scripts/install-swanlab.sh

echo "==> web unit tests"
(cd web && npx vitest run --reporter=dot)

echo "==> Rust tests"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast

echo "==> engine benchmark smoke (engine side only; the side-by-side run is bench/engine/run.sh)"
bench/engine/run.sh --smoke >/dev/null

echo "==> browser tests against the real binary"
scripts/e2e.sh

echo "all test suites passed"
