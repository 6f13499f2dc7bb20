#!/usr/bin/env python3
"""The baseline a responder would otherwise use: a straightforward admin script that lists the
users and, one request at a time, deletes each user's factors and ends their sessions (as the
usual Okta clean-up scripts do). Usage: baseline_okta.py URL API_TOKEN. Prints JSON."""
import json
import sys
import time

import requests

url, token = sys.argv[1], sys.argv[2]
session = requests.Session()
session.headers["Authorization"] = f"SSWS {token}"
start = time.monotonic()
requests_sent = 0
users = 0
next_page = f"{url}/api/v1/users?limit=200"
while next_page:
    page = session.get(next_page)
    requests_sent += 1
    next_page = page.links.get("next", {}).get("url")
    for user in page.json():
        factors = session.get(f"{url}/api/v1/users/{user['id']}/factors").json()
        requests_sent += 1
        for factor in factors:
            session.delete(f"{url}/api/v1/users/{user['id']}/factors/{factor['id']}")
            requests_sent += 1
        session.delete(f"{url}/api/v1/users/{user['id']}/sessions")
        requests_sent += 1
        users += 1
seconds = time.monotonic() - start
print(json.dumps({"users": users, "seconds": round(seconds, 2), "usersPerSecond": round(users / seconds, 2),
                  "providerRequests": requests_sent, "providerRequestsPerSecond": round(requests_sent / seconds, 2)}))
