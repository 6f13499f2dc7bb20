#!/usr/bin/env python3
"""Users invalidated over time, from a bench timeline CSV, as a PNG."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

source, target, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = list(csv.DictReader(open(source)))
t = [float(r["seconds"]) for r in rows]
n = [int(r["invalidated"]) for r in rows]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
ax.plot(t, n, linewidth=2)
ax.set_xlabel("seconds since kubectl apply")
ax.set_ylabel("users invalidated")
ax.set_title(f"MFA recall of {users:,} users (simulated Okta, 2 cores)")
ax.grid(True, alpha=0.3)
ax.set_ylim(0, users * 1.02)
fig.tight_layout()
fig.savefig(target)
