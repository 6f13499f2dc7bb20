#!/usr/bin/env bash
# cargo deny over the workspace, as deny.toml says: licenses, bans and sources always (offline,
# from the crates the build fetched); advisories when the RustSec database can be fetched from
# GitHub, and otherwise a line that says they were not checked. Installs cargo-deny into the
# cache folder if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MFA_RECALL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mfa-recall}"
VERSION=0.20.2
export PATH="$CACHE/tools/bin:$PATH"
if [ "$(cargo-deny --version 2>/dev/null)" != "cargo-deny $VERSION" ]; then
  cargo install --locked cargo-deny --version "$VERSION" --root "$CACHE/tools"
fi
# cargo deny reads the metadata of every platform's dependencies: have them all, not only this
# host's (what a build downloads).
cargo fetch --locked
cargo deny --offline check licenses bans sources
advisories=https://github.com/RustSec/advisory-db
if timeout 20 git ls-remote --exit-code "$advisories" HEAD >/dev/null 2>&1; then
  cargo deny check advisories
else
  echo "deny: advisories NOT checked: the RustSec database ($advisories) cannot be reached from this machine"
fi
