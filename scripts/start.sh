#!/usr/bin/env bash
# Starts LLM Workbench on its embedded defaults: SQLite database and generated secrets under
# ./data, web UI and API at http://127.0.0.1:8080. Extra arguments go to `workbench serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build-web.sh
if [ -x scripts/fetch-model.sh ]; then
  scripts/fetch-model.sh || echo "warning: the reference model could not be fetched; local models stay unavailable" >&2
fi
cargo build --release -p workbench
exec target/release/workbench serve "$@"
