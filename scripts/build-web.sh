#!/usr/bin/env bash
# Builds the web UI into web/dist (embedded by the binary) when its sources changed since the
# last build. Installs npm packages from the lockfile when they are missing or stale.
set -euo pipefail
cd "$(dirname "$0")/../web"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci (web)"
  npm ci --no-audit --no-fund --loglevel=error
fi

stamp=dist/index.html
if [ -f "$stamp" ] && [ -z "$(find src public index.html package.json vite.config.ts tsconfig*.json -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  echo "==> web UI is up to date"
  exit 0
fi
echo "==> building the web UI"
npm run build --silent
