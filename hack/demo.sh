#!/usr/bin/env bash
# The main job: a full MFA recall on local real parts. Builds or reuses the parts, starts
# kube-apiserver, etcd and Keycloak on loopback, runs the operator, and plays an incident while
# `kubectl get mfarecalls -w` shows it count up. Everything stops when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."

"$PWD/hack/parts.sh" all
cargo build --workspace --bins
work="$(mktemp -d /tmp/mfa-recall-demo.XXXXXX)"
cleanup() {
  [[ -n "${operator_pid:-}" ]] && kill "$operator_pid" 2>/dev/null || true
  [[ -n "${watch_pid:-}" ]] && kill "$watch_pid" 2>/dev/null || true
  hack/localparts.sh stop "$work"
}
trap cleanup EXIT
hack/localparts.sh start "$work"
source "$work/env"
kubectl="$MFA_RECALL_KUBECTL"

"$kubectl" apply -f crds/
"$kubectl" wait --for=condition=Established crd/mfarecalls.mfarecall.io crd/identitybackends.mfarecall.io crd/recallledgersegments.mfarecall.io --timeout=30s
# The key the operator signs its ledger with (the chart keeps it in a Secret).
head -c 32 /dev/urandom | base64 > "$work/ledger.key"
target/debug/mfa-recall operator --audit-file "$work/audit.jsonl" --ledger-key-file "$work/ledger.key" --no-audit-stdout 2> "$work/operator.log" &
operator_pid=$!
"$kubectl" create namespace security
"$kubectl" get mfarecalls -n security -w &
watch_pid=$!

target/debug/mfa-recall-demo
sleep 2
kill "$watch_pid" 2>/dev/null || true
echo
"$kubectl" get identitybackends,mfarecalls -n security
"$kubectl" get mfarecall vendor-breach -n security -o jsonpath='{.status.counts}'; echo
"$kubectl" get events -n security --sort-by=.metadata.creationTimestamp | tail -5
target/debug/mfa-recall audit verify "$work/audit.jsonl"
echo "demo: audit trail lines by action:"
grep -o '"action":"[a-z.]*"' "$work/audit.jsonl" | sort | uniq -c
