#!/usr/bin/env bash
# The whole test suite: builds or reuses the real parts (kube-apiserver, etcd, Keycloak), starts
# them and PostgreSQL on loopback, runs every unit and integration test, and stops the parts.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in go mvn java cargo openssl curl python3 unzip node npm; do
  command -v "$tool" >/dev/null || { echo "test: $tool is missing; install it (see README, 'Requirements')" >&2; exit 1; }
done

hack/parts.sh all
hack/parts.sh helm   # tests/helm_chart.rs runs the real helm (MFA_RECALL_HELM in the env file)
hack/lua.sh >/dev/null   # tests/argocd_health.rs runs the chart's Argo CD health check
hack/browser.sh >/dev/null   # tests/console.rs drives Debian's Chromium with playwright-core
cargo build --workspace --all-targets
# What the workspace is built from: licenses, banned crates, sources (deny.toml).
hack/deny.sh
work="$(mktemp -d /tmp/mfa-recall-test.XXXXXX)"
# The parts' logs and data are kept only when something failed, to read.
trap 'status=$?; hack/postgres.sh stop "$work/pg" || true; hack/localparts.sh stop "$work"; if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "test: the parts logs are kept in $work" >&2; fi' EXIT
hack/localparts.sh start "$work"
source "$work/env"
# Debian's PostgreSQL for the reference in-house backend (crates/pg-backend).
hack/postgres.sh start "$work/pg"
source "$work/pg/env"
# Two at a time: each end-to-end test runs its own operator against the shared Keycloak.
cargo test --workspace --all-targets -- --test-threads=2
# Every credential the tests used carries a canary marker: none may be in anything the operator
# wrote (logs, audit trails, events, status, ledger objects).
target/debug/mfa-recall-canary-sweep --files "$MFA_RECALL_PARTS_DIR/tests"
# A short pass of every fuzz target (docs/reliability.md has the long runs).
FUZZ_RUNS="${FUZZ_RUNS:-50000}" hack/fuzz.sh
