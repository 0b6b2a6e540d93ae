#!/usr/bin/env bash
# Installs the official SwanLab SDK into its own virtual environment (.venv-swanlab/), used by
# scripts/swanlab_sidecar.py when SwanLab logging is enabled in the admin settings. Idempotent:
# an environment that already imports swanlab is kept and the network is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${SWANLAB_VENV:-.venv-swanlab}"
PACKAGE="swanlab==${SWANLAB_VERSION:-0.10.3}"
PYTHON="${PYTHON:-python3}"

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import swanlab' 2>/dev/null; then
    echo "swanlab present: $VENV ($("$VENV/bin/python" -c 'import swanlab; print(swanlab.__version__)'))"
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null; then
    echo "install-swanlab: $PYTHON not found; SwanLab logging stays unavailable (training still works)" >&2
    exit 1
fi

echo "==> installing $PACKAGE into $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PACKAGE"
"$VENV/bin/python" -c 'import swanlab; print("swanlab", swanlab.__version__)'
