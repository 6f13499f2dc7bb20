#!/usr/bin/env bash
# The browser the console's tests drive: Debian's Chromium (installed when missing: root or sudo,
# and Debian's package registry) and playwright-core from the npm registry, installed from
# tests/browser/package-lock.json into the cache folder outside the checkout. Test tools cannot
# download their own browsers here, so Playwright launches /usr/bin/chromium.
# Prints the shell variables the test reads (eval "$(hack/browser.sh)").
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MFA_RECALL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mfa-recall}"

if ! command -v chromium >/dev/null; then
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "browser: installing Debian's chromium" >&2
  log="$(mktemp)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$log" 2>&1 || {
    echo "browser: apt-get install chromium failed (see $log): the console's browser tests need it" >&2; exit 1; }
fi
command -v node >/dev/null || { echo "browser: node is missing: the console's browser tests run on Node.js with npm" >&2; exit 1; }

lock="tests/browser/package-lock.json"
dir="$CACHE/browser-$(sha256sum tests/browser/package.json "$lock" 2>/dev/null | sha256sum | cut -c1-12)"
if [[ ! -d "$dir/node_modules/playwright-core" ]]; then
  echo "browser: installing playwright-core into $dir" >&2
  mkdir -p "$dir"
  cp tests/browser/package.json "$dir/"
  if [[ -f "$lock" ]]; then cp "$lock" "$dir/"; (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  else (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >&2); fi
fi
echo "export MFA_RECALL_CHROMIUM='$(command -v chromium)'"
echo "export MFA_RECALL_NODE_MODULES='$dir/node_modules'"
