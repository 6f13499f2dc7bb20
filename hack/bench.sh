#!/usr/bin/env bash
# Benchmarks (issue 5; docs/benchmarks.md): the operator end to end on a real apiserver against a
# simulated Okta in its own process, at the sizes given (default 10000 100000 1000000), each with
# the limit (measured before and after each recall; three rounds up to 100 k users) and the
# baseline script on the same simulator, plus one rate-limited run, and per size what watching
# the re-enrollment window costs the provider (issue 25), and how fast a signal starts a recall
# and how many duplicate signals the receiver refuses a second (issue 27), and how fast the
# console's pages answer and follow a status change (issue 28), and a recall of an in-house store
# through the reference backend (issue 29).
# Writes docs/benchmarks/results.json and docs/benchmarks/timeline-<N>.csv (and .png).
# Usage: hack/bench.sh [USERS...]
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("${@:-10000 100000 1000000}")
read -r -a sizes <<< "${sizes[*]}"
"$PWD/hack/parts.sh" all
cargo build --release --workspace --bins
work="$(mktemp -d /tmp/mfa-recall-bench.XXXXXX)"
trap 'hack/localparts.sh stop "$work/parts"; hack/postgres.sh stop "$work/pg"' EXIT
hack/localparts.sh start "$work/parts"
source "$work/parts/env"
hack/postgres.sh start "$work/pg"
source "$work/pg/env"
"$MFA_RECALL_KUBECTL" apply -f crds/ > /dev/null
"$MFA_RECALL_KUBECTL" wait --for=condition=Established crd/mfarecalls.mfarecall.io crd/identitybackends.mfarecall.io --timeout=30s > /dev/null

mkdir -p docs/benchmarks
results="$work/results.jsonl"
for n in "${sizes[@]}"; do
  # Three rounds (limit, recall, limit, recall, limit, recall, limit) where a round takes a minute
  # or two; one above 100 k users, where a round takes a quarter of an hour.
  rounds=$(( n > 100000 ? 1 : 3 ))
  echo "bench: $n users, $rounds round(s)" >&2
  target/release/mfa-recall-bench --users "$n" --rounds "$rounds" --work "$work/run-$n" --timeline "docs/benchmarks/timeline-$n.csv" >> "$results"
done
# The re-enrollment window: one check by per-user polling against the stream's, per size.
for n in "${sizes[@]}"; do
  echo "bench: window, $n pending users" >&2
  target/release/mfa-recall-bench --window --users "$n" --work "$work/window-$n" >> "$results"
done
# Signals (issue 27): an Alertmanager notification to the first revocation, five times, and
# 2 x 20,000 duplicates of it through the receiver.
echo "bench: signals" >&2
target/release/mfa-recall-bench --signals --users 10000 --rounds 5 --work "$work/signals" >> "$results"
# The console (issue 28): its pages' first byte with 200 recalls listed, and a status change to
# the event carrying it on the page's stream, 50 times each.
echo "bench: console" >&2
target/release/mfa-recall-bench --console --users 200 --rounds 50 --work "$work/console" >> "$results"
# An in-house store (issue 29): 100 k users through the backend protocol, the reference backend
# over Debian's PostgreSQL, with the backend's and PostgreSQL's CPU.
echo "bench: in-house store" >&2
target/release/mfa-recall-bench --inhouse --users 100000 --work "$work/inhouse" >> "$results"
# Rate-limited: Okta-style per-minute limits per bucket, announced in X-Rate-Limit-* headers.
echo "bench: rate-limited" >&2
target/release/mfa-recall-bench --users 6000 --per-minute 12000 --no-references --work "$work/run-limited" >> "$results"

python3 hack/bench/results.py "$results" > docs/benchmarks/results.json
# The plot of the largest run, drawn with matplotlib from a venv in the cache.
venv="${MFA_RECALL_CACHE:-$HOME/.cache/mfa-recall}/bench-venv"
[[ -x "$venv/bin/python" ]] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib; }
largest="${sizes[-1]}"
"$venv/bin/python" hack/bench/plot.py "docs/benchmarks/timeline-$largest.csv" "docs/benchmarks/timeline-$largest.png" "$largest"
cat docs/benchmarks/results.json
