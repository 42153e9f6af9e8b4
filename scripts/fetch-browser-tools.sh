#!/usr/bin/env bash
# The browser tests' tools (tests/browser), idempotently: Debian's chromium package (driven
# by Python's playwright, installed with the dev extra, through executable_path; no browser
# download) and axe-core from the npm registry into .cache/axe-core/<version>/axe.min.js.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "installing Debian's chromium (apt-get) for the browser tests"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
AXE_VERSION=4.10.3
target=.cache/axe-core/$AXE_VERSION
if [ ! -s "$target/axe.min.js" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null && tar -xzf axe-core-*.tgz)
  mkdir -p "$target"
  cp "$tmp/package/axe.min.js" "$target/axe.min.js"
  echo "axe-core $AXE_VERSION installed: $target/axe.min.js"
fi
