#!/usr/bin/env bash
# Debian's Lua 5.4 interpreter, for the test that runs the Argo CD health check
# (charts/mfa-recall-operator/argocd). Installs the package when it is missing (root, or sudo, and
# Debian's package registry); prints the interpreter's path.
set -euo pipefail
if ! command -v lua5.4 >/dev/null; then
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "lua: installing Debian's lua5.4" >&2
  log="$(mktemp)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q lua5.4 >"$log" 2>&1 || {
    echo "lua: apt-get install lua5.4 failed (see $log): the Argo CD health test needs it" >&2; exit 1; }
fi
command -v lua5.4
