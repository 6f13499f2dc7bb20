#!/usr/bin/env python3
"""Writes tests/api/keycloak.json: the Admin REST API requests the Keycloak adapter may send,
each resolved in the Keycloak server's own resource classes (keycloak-services, the JAX-RS
@Path/@GET/@QueryParam annotations that Keycloak's published OpenAPI description is generated
from), read with `javap -v -p`. A wanted request the server does not define stops the script.

Usage: keycloak_from_jar.py <keycloak home> > tests/api/keycloak.json   (needs a JDK's javap)
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "org/keycloak/services/resources/admin/"
# (method, template under /admin/realms/{realm}): what the adapter sends.
WANTED = [
    ("GET", "users"),
    ("GET", "users/count"),
    ("GET", "users/{id}"),
    ("PUT", "users/{id}"),
    ("GET", "users/{id}/credentials"),
    ("DELETE", "users/{id}/credentials/{credentialId}"),
    ("GET", "users/{id}/sessions"),
    ("GET", "users/{id}/consents"),
    ("DELETE", "users/{id}/consents/{client}"),
    ("POST", "users/{id}/logout"),
    ("GET", "group-by-path/{path}"),
    ("GET", "groups"),
    ("GET", "groups/{id}/children"),
    ("GET", "groups/{id}/members"),
    ("GET", "events"),
    ("GET", "events/config"),
]
HTTP = {"GET", "POST", "PUT", "DELETE", "PATCH"}
HEADER = re.compile(r"^  (?:(?:public|protected|private|static|final|abstract|synchronized|default)\s+)*([\w.$<>\[\], ?]+?)\s+(\w+)\((.*)\);$")


def methods_of(javap):
    """Each method's name, return type, HTTP method, @Path and query parameters."""
    found, current, section = [], None, None
    lines = javap.splitlines()
    for i, line in enumerate(lines):
        header = HEADER.match(line)
        if header:
            current = {"returns": header.group(1).split("<")[0], "name": header.group(2), "http": None, "path": None, "query": []}
            found.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped in ("RuntimeVisibleAnnotations:", "RuntimeVisibleParameterAnnotations:"):
            section = stripped
        match = re.fullmatch(r"jakarta\.ws\.rs\.(GET|POST|PUT|DELETE|PATCH)", stripped)
        if match and section == "RuntimeVisibleAnnotations:":
            current["http"] = match.group(1)
        if stripped in ("jakarta.ws.rs.Path(", "jakarta.ws.rs.QueryParam("):
            value = re.match(r'\s*value="(.*)"', lines[i + 1])
            if value and stripped == "jakarta.ws.rs.Path(" and section == "RuntimeVisibleAnnotations:":
                current["path"] = value.group(1)
            if value and stripped == "jakarta.ws.rs.QueryParam(":
                current["query"].append(value.group(1))
    return found


def segments(path):
    # A template variable may carry a regular expression ({path: .*}); it stands for one segment here.
    return [s for s in re.sub(r"\{(\w[\w-]*)\s*:[^}]*\}", r"{\1}", path).strip("/").split("/") if s]


def resolve(classes, start, method, template):
    """The query parameters of `method` at `template` below resource class `start`."""
    def walk(cls, rest):
        for m in classes.get(cls, []):
            if m["path"] is None and m["http"] is None:
                continue
            mine = segments(m["path"] or "")
            if len(mine) > len(rest) or any(not (a == b or (a.startswith("{") and b.startswith("{"))) for a, b in zip(mine, rest)):
                continue
            left = rest[len(mine):]
            if m["http"] is None:
                found = walk(m["returns"], left)
                if found is not None:
                    return found
            elif m["http"] == method and not left:
                return sorted(set(m["query"]))
        return None
    query = walk(start, segments(template))
    if query is None:
        raise SystemExit(f"{method} {template}: the server defines no such request")
    return query


def main():
    home = sys.argv[1]
    jar = glob.glob(os.path.join(home, "lib/lib/main/org.keycloak.keycloak-services-*.jar"))[0]
    version = re.search(r"keycloak-services-(.+)\.jar$", jar).group(1)
    classes = {}
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(jar) as z:
        names = [n for n in z.namelist() if n.startswith(PACKAGE) and n.endswith(".class")]
        z.extractall(tmp, names)
        paths = [os.path.join(tmp, n) for n in names]
        for path, name in zip(paths, names):
            out = subprocess.run(["javap", "-v", "-p", path], capture_output=True, text=True, check=True).stdout
            classes[name[:-len(".class")].replace("/", ".")] = methods_of(out)
    start = "org.keycloak.services.resources.admin.RealmAdminResource"
    methods = [{"id": f"{m} /admin/realms/{{realm}}/{t}", "httpMethod": m, "path": f"admin/realms/{{realm}}/{t}", "query": resolve(classes, start, m, t)} for m, t in WANTED]
    print(json.dumps({
        "source": [{
            "name": "Keycloak Admin REST API, from the JAX-RS annotations of the server's own resource classes (org.keycloak.services.resources.admin, read with javap)",
            "url": f"https://repo1.maven.org/maven2/org/keycloak/keycloak-services/{version}/",
            "version": version,
        }],
        "globalQuery": [],
        "globalHeaders": ["authorization"],
        "methods": methods,
        "otherEndpoints": [{"httpMethod": "POST", "path": "/realms/{realm}/protocol/openid-connect/token"}],
    }, indent=2))


main()
