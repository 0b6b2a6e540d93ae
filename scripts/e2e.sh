#!/usr/bin/env bash
# Starts the real binary on a free port with a fresh SQLite data directory and a bootstrap admin,
# runs the browser tests in web/e2e against it, and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# The same selection as the test run, so cargo reuses its build instead of re-resolving features.
cargo build --workspace --all-targets
# Screenshots of this run only (they are the run's artifacts).
rm -rf web/test-results
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WORKBENCH__AUTH__BOOTSTRAP_ADMIN_EMAIL=admin@example.com
export WORKBENCH__AUTH__BOOTSTRAP_ADMIN_PASSWORD=admin-password-1
export WORKBENCH__PROVIDERS__ALLOW_PRIVATE_URLS=true
# Short-lived access tokens make the run exercise the silent refresh; the wait step checks it.
export WORKBENCH__AUTH__ACCESS_TOKEN_TTL_SECS=${WORKBENCH__AUTH__ACCESS_TOKEN_TTL_SECS:-10}
export E2E_TOKEN_WAIT_S=${E2E_TOKEN_WAIT_S:-11}
# The reference model (fetched by scripts/fetch-model.sh) in the models folder, as after a fresh
# install: the first start registers it, and the local-model and training flows use it.
mkdir -p "$data/models"
ln -s "$root/data/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$data/models/"
"$root/target/debug/workbench" --data-dir "$data" serve --bind "127.0.0.1:$port" >"$data/server.log" 2>&1 &
server=$!
fake_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The fake provider: models pick their behaviour by name (think: reasoning block; cut: the
# stream breaks off mid-answer).
"$root/target/debug/fake-provider" --listen "127.0.0.1:$fake_port" --models think,cut >"$data/fake.log" 2>&1 &
fake=$!
cleanup() {
  kill "$server" "$fake" 2>/dev/null || true
  wait "$server" "$fake" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$data/server.log"; exit 1; }

export WORKBENCH_URL="http://127.0.0.1:$port"
export E2E_PROVIDER_URL="http://127.0.0.1:$fake_port/v1"
export E2E_MODEL=think
export E2E_FAIL_MODEL=cut
export WORKBENCH_ADMIN_EMAIL=$WORKBENCH__AUTH__BOOTSTRAP_ADMIN_EMAIL
export WORKBENCH_ADMIN_PASSWORD=$WORKBENCH__AUTH__BOOTSTRAP_ADMIN_PASSWORD
(cd web && node e2e/run.mjs) || { echo "--- server log ---"; tail -50 "$data/server.log"; exit 1; }
