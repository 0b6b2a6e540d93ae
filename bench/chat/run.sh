#!/usr/bin/env bash
# Streamed chat through the platform vs straight to the fake provider, and LiteLLM's proxy side by
# side, in one run (issue #4's targets). Everything listens on 127.0.0.1 and is stopped at the end.
#
#   bench/chat/run.sh [--smoke] [--no-litellm]
#
# Release builds of workbench, fake-provider and the chat-bench load generator (one cargo call, so
# one feature resolution). The platform runs on a fresh SQLite database in a temporary directory;
# set BENCH_DATABASE_URL=postgres://… to measure another backend (that database must be empty).
# LiteLLM (`litellm[proxy]`) is installed once into ${LITELLM_VENV:-bench/.venv-litellm}
# (git-ignored). --smoke: short phases, 64 open streams, no LiteLLM; under a minute once built.
# Results: bench/chat/results/chat-<time>.json (git-ignored) and a table on stdout. BENCH_ARGS
# passes more options to the load generator (`target/release/chat-bench --help`). BENCH_MODEL
# replaces the fake's `bench-256` answers, e.g. `bench-1` to measure what each request costs
# besides its streaming.
set -euo pipefail
cd "$(dirname "$0")/../.."

smoke=0
with_litellm=1
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1; with_litellm=0 ;;
        --no-litellm) with_litellm=0 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done

# 1.80.0 is what the README figures used; newer [proxy] extras pull a package PyPI does not carry.
LITELLM_VERSION="${LITELLM_VERSION:-1.80.0}"
bench_model="${BENCH_MODEL:-bench-256}"
open_model="endless-1000"
paced_model="paced-64-20"

# BENCH_BIN=DIR runs binaries already built there instead (e.g. target/debug, to check this
# script quickly; debug figures mean nothing).
if [[ -n "${BENCH_BIN:-}" ]]; then
    bin="$BENCH_BIN"
else
    cargo build --release --quiet -p workbench -p fake-provider -p chat-bench
    bin="${CARGO_TARGET_DIR:-target}/release"
fi

# 512 streams in and 512 out, plus the load generator's: more than a default descriptor limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL NAME LOG
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not come up; its log:" >&2
    tail -n 40 "$3" >&2
    exit 1
}

fake_port="$(free_port)"
"$bin/fake-provider" --listen "127.0.0.1:$fake_port" --models "$bench_model,$open_model,$paced_model" >"$tmp/fake.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$fake_port/v1/models" "the fake provider" "$tmp/fake.log"

wb_port="$(free_port)"
email="bench@example.com"
password="bench-password-1234"
(
    export WORKBENCH__DATA_DIR="$tmp/data"
    export WORKBENCH__AUTH__BOOTSTRAP_ADMIN_EMAIL="$email"
    export WORKBENCH__AUTH__BOOTSTRAP_ADMIN_PASSWORD="$password"
    [[ -n "${BENCH_DATABASE_URL:-}" ]] && export WORKBENCH__DATABASE__URL="$BENCH_DATABASE_URL"
    exec "$bin/workbench" serve --bind "127.0.0.1:$wb_port"
) >"$tmp/workbench.log" 2>&1 &
wb_pid=$!
pids+=("$wb_pid")
wait_http "http://127.0.0.1:$wb_port/healthz" "workbench" "$tmp/workbench.log"

litellm_args=()
if [[ $with_litellm == 1 ]]; then
    venv="${LITELLM_VENV:-bench/.venv-litellm}"
    if [[ ! -x "$venv/bin/litellm" ]]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
    fi
    cat >"$tmp/litellm.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/$bench_model
      api_base: http://127.0.0.1:$fake_port/v1
      api_key: sk-fake-not-a-secret
EOF
    lite_port="$(free_port)"
    (
        export LITELLM_MASTER_KEY="sk-bench"
        # Offline: the model cost map ships with the package instead of being fetched.
        export LITELLM_LOCAL_MODEL_COST_MAP=True
        export LITELLM_TELEMETRY=False
        # The fake repeats one token; LiteLLM otherwise aborts a stream after 100 identical chunks.
        export REPEATED_STREAMING_CHUNK_LIMIT=100000
        exec "$venv/bin/litellm" --config "$tmp/litellm.yaml" --host 127.0.0.1 --port "$lite_port"
    ) >"$tmp/litellm.log" 2>&1 &
    lite_pid=$!
    pids+=("$lite_pid")
    wait_http "http://127.0.0.1:$lite_port/health/liveliness" "LiteLLM" "$tmp/litellm.log"
    litellm_args=(--litellm "http://127.0.0.1:$lite_port" --litellm-pid "$lite_pid" --litellm-key sk-bench --litellm-model bench)
fi

phase_args=()
if [[ $smoke == 1 ]]; then
    phase_args=(--secs 1 --open-streams 64)
fi

mkdir -p bench/chat/results
out="bench/chat/results/chat-$(date -u +%Y%m%dT%H%M%SZ).json"
status=0
"$bin/chat-bench" \
    --fake "http://127.0.0.1:$fake_port" \
    --platform "http://127.0.0.1:$wb_port" --platform-pid "$wb_pid" \
    --email "$email" --password "$password" \
    --bench-model "$bench_model" --open-model "$open_model" --paced-model "$paced_model" \
    "${phase_args[@]}" "${litellm_args[@]}" ${BENCH_ARGS:-} \
    --out "$out" || status=$?
cp "$out" bench/chat/results/latest.json 2>/dev/null || true
if [[ $status != 0 ]]; then
    echo "--- workbench log (tail) ---" >&2
    tail -n 20 "$tmp/workbench.log" >&2
fi
exit "$status"
