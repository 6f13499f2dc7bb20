"""Writes docs/benchmarks/results.json from mfa-recall-bench's JSON lines (hack/bench.sh).

Each unthrottled recall carries its own ratios (mfa-recall-bench computes them against the limit
runs right before and after it). Per size, a summary adds the figure the targets are judged by:
the median recall against the median limit run. This machine's speed drifts by tens of percent
within minutes, and a single slow limit run beside a recall flatters that recall's ratio to the
mean of its neighbours, while the faster neighbour understates it; medians over the rounds are
moved by neither one slow nor one fast run.
Usage: python3 hack/bench/results.py RESULTS.jsonl > docs/benchmarks/results.json
"""
import json
import statistics
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
cpu = open("/proc/cpuinfo").read()
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "unknown")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
machine = f"{cpu.count('processor' + chr(9) + ':')} cores ({model}), {mem / 1048576:.0f} GiB"

summaries = []
for users in sorted({r["users"] for r in runs if r["run"] == "unthrottled"}):
    recalls = [r for r in runs if r["run"] == "unthrottled" and r["users"] == users]
    limits = [r for r in runs if r["run"] == "limit" and r["users"] == users]
    recall_speed = statistics.median(r["usersPerSecond"] for r in recalls)
    limit_speed = statistics.median(r["usersPerSecond"] for r in limits)
    summaries.append({
        "users": users,
        "rounds": len(recalls),
        "medianSecondsToAllInvalidated": statistics.median(r["secondsToAllInvalidated"] for r in recalls),
        "medianUsersPerSecond": recall_speed,
        "medianLimitUsersPerSecond": round(limit_speed, 2),
        "ratioOfMedians": round(recall_speed / limit_speed, 4),
        "ratioToLimitByRound": [r["ratioToLimit"] for r in recalls],
        "ratioToFasterLimitByRound": [r["ratioToFasterLimit"] for r in recalls],
    })
json.dump({"machine": machine, "summaries": summaries, "runs": runs}, sys.stdout, indent=2)
