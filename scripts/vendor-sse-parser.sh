#!/usr/bin/env bash
# Vendor eventsource-parser (the maintained Server-Sent Events parser, MIT) into the web app's
# static files and the extension, so neither loads anything from a CDN. The version is the one
# pinned in extension/package.json; extension/tests/vendor.test.mjs checks the copies match it.
# Run after changing that pin: `bash scripts/vendor-sse-parser.sh` (or `npm run vendor` in extension/).
set -euo pipefail
cd "$(dirname "$0")/.."

(cd extension && npm ci --no-audit --no-fund --loglevel=error)
source=extension/node_modules/eventsource-parser
version=$(node -p "require('./$source/package.json').version")
for target in extension/vendor/eventsource-parser backend/api/static/vendor/eventsource-parser; do
  mkdir -p "$target"
  cp "$source/dist/index.js" "$target/index.js"
  cp "$source/dist/index.js.map" "$target/index.js.map"  # index.js names it; without it devtools log a 404
  cp "$source/LICENSE" "$target/LICENSE"
  printf 'eventsource-parser %s (https://github.com/rexxars/eventsource-parser), dist/index.js and its source map, unchanged.\nRefresh with scripts/vendor-sse-parser.sh.\n' "$version" > "$target/README"
done
echo "vendored eventsource-parser $version"
