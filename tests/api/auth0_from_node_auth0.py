#!/usr/bin/env python3
"""Writes tests/api/auth0.json: the Auth0 Management API v2 requests the Auth0 adapter may send,
each found, with its query parameters, in Auth0's official Node.js SDK (auth0/node-auth0), whose
management client is generated from Auth0's Management API description (Auth0 publishes no
description file in a public repository). A wanted method the SDK does not define stops the script.

Usage: auth0_from_node_auth0.py <node-auth0 checkout> <commit> > tests/api/auth0.json
"""
import json
import pathlib
import re
import sys

WANTED = [
    ("GET", "users"),
    ("GET", "users/{id}"),
    ("PATCH", "users/{id}"),
    ("GET", "users-by-email"),
    ("GET", "users/{id}/authentication-methods"),
    ("DELETE", "users/{id}/authentication-methods/{authentication_method_id}"),
    ("GET", "users/{user_id}/sessions"),
    ("DELETE", "users/{user_id}/sessions"),
    ("GET", "users/{user_id}/refresh-tokens"),
    ("DELETE", "users/{user_id}/refresh-tokens"),
    ("POST", "users/{id}/multifactor/actions/invalidate-remember-browser"),
    ("GET", "roles"),
    ("GET", "roles/{id}/users"),
    ("GET", "logs"),
    ("POST", "jobs/users-exports"),
    ("GET", "jobs/{id}"),
    ("GET", "guardian/policies"),
    # reEnrollment.via VerifiedLink: an MFA enrollment ticket Auth0 mails to the user.
    ("POST", "guardian/enrollments/ticket"),
]

# Query parameters Auth0's reference page documents that the SDK at this commit leaves out or names
# otherwise: https://auth0.com/docs/api/management/v2/logs/get-logs ("Set custom search criteria
# using the `q` parameter, or search from a specific log ID" with `from` and `take`).
DOCUMENTED_TOO = {("GET", "logs"): ["q", "from", "take"]}

# One SDK method: its path template in core.url.join, its HTTP method, its query parameters.
METHOD = re.compile(r"(?:public|private) async \w+\(.*?(?=(?:public|private) async |\Z)", re.S)
PATH = re.compile(r"core\.url\.join\(.*?[`\"]([^`\"]*)[`\"]", re.S)
VERB = re.compile(r'method: "(GET|POST|PUT|PATCH|DELETE)"')
QUERY = re.compile(r"_queryParams: Record<string, unknown> = \{(.*?)\};", re.S)


def sdk_methods(root):
    found = {}
    for client in pathlib.Path(root, "src/management/api/resources").rglob("Client.ts"):
        for body in METHOD.findall(client.read_text()):
            path, verb = PATH.search(body), VERB.search(body)
            if not (path and verb):
                continue
            template = re.sub(r"\$\{core\.url\.encodePathParam\((\w+)\)\}", r"{\1}", path.group(1))
            query = QUERY.search(body)
            names = [re.split(r"[:,]", line.strip())[0] for line in query.group(1).splitlines() if line.strip()] if query else []
            found[(verb.group(1), template)] = sorted(set(names))
    return found


def main():
    root, commit = sys.argv[1], sys.argv[2]
    found = sdk_methods(root)
    methods = []
    for verb, template in WANTED:
        if (verb, template) not in found:
            raise SystemExit(f"{verb} {template}: not in the SDK")
        query = sorted(set(found[(verb, template)]) | set(DOCUMENTED_TOO.get((verb, template), [])))
        methods.append({"id": f"{verb} /api/v2/{template}", "httpMethod": verb, "path": f"api/v2/{template}", "query": query})
    print(json.dumps({
        "source": [{
            "name": "Auth0 Management API v2, as generated into Auth0's official Node.js SDK (management client); GET /logs q, from, take from Auth0's reference page",
            "url": f"https://github.com/auth0/node-auth0/tree/{commit}/src/management/api/resources",
            "version": commit,
        }],
        "globalQuery": [],
        "globalHeaders": ["authorization"],
        "methods": methods,
        # The client-credentials grant (Authentication API) and the export file's download link,
        # which is wherever the job's `location` points.
        "otherEndpoints": [{"httpMethod": "POST", "path": "/oauth/token"}, {"httpMethod": "GET", "path": "/exports/{file}"}],
    }, indent=2))


main()
