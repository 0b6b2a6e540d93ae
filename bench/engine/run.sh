#!/usr/bin/env bash
# Engine throughput against llama.cpp (decode, prompt) and optionally PyTorch + PEFT (LoRA
# training), same model, same machine, same thread count, in one run; prints the ratios.
#
#   bench/engine/run.sh [--torch] [--smoke]
#
# llama-cpp-python is built from source into ${LLAMACPP_VENV:-bench/.venv-llamacpp} (minutes, once). With --torch,
# PyTorch + transformers + peft + gguf go into ${TORCH_VENV:-$HOME/.cache/workbench/venv-torch}
# (several GB; kept outside the repository). --smoke runs only the engine side, briefly (CI).
set -euo pipefail
cd "$(dirname "$0")/../.."

threads="${BENCH_THREADS:-2}"
with_torch=0
smoke=0
for arg in "$@"; do
    case "$arg" in
        --torch) with_torch=1 ;;
        --smoke) smoke=1 ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done

./scripts/fetch-model.sh >/dev/null
model="$(pwd)/${WORKBENCH_DATA_DIR:-./data}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
out="bench/results"
mkdir -p "$out"

train_steps=3
[[ $smoke == 1 ]] && train_steps=1
# The reference PEFT adapter, when shared fixtures are next to the repository, measures the cost
# of LoRA unmerged (quantized base) vs merged (f32 base).
adapter="$(pwd)/../shared/fixtures/reference/peft/adapter"
[[ -f "$adapter/adapter_config.json" ]] && export BENCH_ADAPTER="$adapter"
# Measured as shipped: a release build. The dev profile optimises every crate too (Cargo.toml),
# but keeps debug assertions and overflow checks, which cost decoding about a quarter of its CPU
# time per token. --smoke only checks that the benchmark runs: it uses the test build (building
# the whole workspace keeps that build's feature resolution; `-p engine` would recompile
# dependencies).
if [[ $smoke == 1 ]]; then
    cargo build -q --workspace --all-targets
    bench_bin="${CARGO_TARGET_DIR:-target}/debug/examples/bench"
else
    cargo build -q --release -p engine --example bench
    bench_bin="${CARGO_TARGET_DIR:-target}/release/examples/bench"
fi
# Matmuls and the engine's kernels run on rayon's $threads threads; candle's separate element-wise
# pool (CANDLE_NUM_THREADS) would spin against them on few cores, as the workbench binary avoids too.
CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS="$threads" "$bench_bin" "$model" "$train_steps" | tee "$out/engine.json"
[[ $smoke == 1 ]] && exit 0

venv="${LLAMACPP_VENV:-bench/.venv-llamacpp}"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    if grep -qw amx_tile /proc/cpuinfo; then
        # Built for the host (-march=native), llama.cpp's AMX path crashes in llama_decode
        # (SIGSEGV) on the AMX-capable VMs this runs on: the same instruction sets, AMX left out.
        export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    fi
    CMAKE_BUILD_PARALLEL_LEVEL="$threads" "$venv/bin/pip" install --quiet --no-cache-dir "llama-cpp-python==0.3.36"
fi
"$venv/bin/python" bench/engine/llama_cpp_bench.py "$model" "$threads" | tee "$out/llama_cpp.json"

if [[ $with_torch == 1 ]]; then
    tvenv="${TORCH_VENV:-$HOME/.cache/workbench/venv-torch}"
    if [[ ! -x "$tvenv/bin/python" ]]; then
        python3 -m venv "$tvenv"
        "$tvenv/bin/pip" install --quiet torch transformers peft gguf
    fi
    "$tvenv/bin/python" bench/engine/torch_peft_bench.py "$model" "$threads" 3 | tee "$out/torch_peft.json"
fi

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n))) if os.path.exists(os.path.join(out, n)) else None
ours, lcpp, torch = load("engine.json"), load("llama_cpp.json"), load("torch_peft.json")
rows = [("decode tokens/s", ours["decode_tokens_per_s"], lcpp and lcpp["decode_tokens_per_s"], 0.8),
        ("prompt tokens/s", ours["prompt_tokens_per_s"], lcpp and lcpp["prompt_tokens_per_s"], 0.8)]
if torch:
    rows.append(("train tokens/s", ours["train_tokens_per_s"], torch["train_tokens_per_s"], 1.0))
    if ours.get("train_tokens_per_cpu_s") and torch.get("train_tokens_per_cpu_s"):
        rows.append(("train tokens per CPU-s", ours["train_tokens_per_cpu_s"], torch["train_tokens_per_cpu_s"], 1.0))
    rows.append(("train peak RSS MB (lower is better)", ours["peak_rss_mb"], torch["peak_rss_mb"], None))
for name, a, b, target in rows:
    ratio = a / b if b else float("nan")
    goal = f"target ≥ {target}" if target else "target ≤ 1.0"
    print(f"{name:38s} engine {a:9.1f}  reference {b or float('nan'):9.1f}  ratio {ratio:5.2f}  ({goal})")
PY
