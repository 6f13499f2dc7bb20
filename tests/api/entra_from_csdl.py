#!/usr/bin/env python3
"""Writes tests/api/entra.json: the Microsoft Graph v1.0 requests the Entra adapter may send,
each resolved against Graph's published v1.0 CSDL metadata (microsoftgraph/msgraph-metadata,
schemas/v1.0-Prod.csdl). A template the metadata does not define (a beta-only resource such as
authentication/signInPreferences or hardwareOathMethods) stops the script.

Usage: entra_from_csdl.py <v1.0-Prod.csdl> <msgraph-metadata commit> > tests/api/entra.json
"""
import json
import sys
import xml.etree.ElementTree as ET

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"

# (HTTP method, path template, headers the documentation requires for it). The query options are
# OData's system query options, which every Graph method takes.
WANTED = [
    ("GET", "users", []),
    ("GET", "users/{id}", []),
    ("PATCH", "users/{id}", []),
    ("POST", "users/{id}/revokeSignInSessions", []),
    ("GET", "users/{id}/authentication/methods", []),
    *[("DELETE", f"users/{{id}}/authentication/{c}/{{id}}", []) for c in (
        "emailMethods", "fido2Methods", "microsoftAuthenticatorMethods", "phoneMethods", "softwareOathMethods",
        "temporaryAccessPassMethods", "windowsHelloForBusinessMethods", "platformCredentialMethods")],
    # An MfaBypass: list, create and delete a user's temporary access pass.
    ("GET", "users/{id}/authentication/temporaryAccessPassMethods", []),
    ("POST", "users/{id}/authentication/temporaryAccessPassMethods", []),
    ("GET", "groups", []),
    # "Advanced query capabilities on Microsoft Entra ID objects": a cast on transitiveMembers needs
    # ConsistencyLevel: eventual (and $count=true).
    ("GET", "groups/{id}/transitiveMembers/microsoft.graph.user", ["consistencylevel"]),
    ("GET", "auditLogs/directoryAudits", []),
    # The re-enrollment window's other logs: sign-ins and Identity Protection's risk detections.
    ("GET", "auditLogs/signIns", []),
    ("GET", "identityProtection/riskDetections", []),
]
SYSTEM_QUERY = ["$select", "$filter", "$top", "$skip", "$count", "$orderby", "$expand", "$search", "$skiptoken", "$format"]


def qualified(name):
    return name.replace("graph.", "microsoft.graph.", 1) if name.startswith("graph.") else name


def load(path):
    root = ET.parse(path).getroot()
    types, bound, sets, singletons = {}, {}, {}, {}
    # Contained collections a POST may create in, unless Capabilities.InsertRestrictions says
    # Insertable false (OData v4: an entity is created by a POST to its collection).
    insertable, refused = set(), set()
    for annotations in root.iter(EDM + "Annotations"):
        for a in annotations.findall(EDM + "Annotation"):
            if a.get("Term") == "Org.OData.Capabilities.V1.InsertRestrictions" and any(
                    p.get("Property") == "Insertable" and p.get("Bool") == "false" for p in a.iter(EDM + "PropertyValue")):
                refused.add(annotations.get("Target"))
    for schema in root.iter(EDM + "Schema"):
        ns = schema.get("Namespace")
        for t in schema.findall(EDM + "EntityType"):
            navs = {n.get("Name"): n.get("Type") for n in t.findall(EDM + "NavigationProperty")}
            types[f"{ns}.{t.get('Name')}"] = (qualified(t.get("BaseType") or ""), navs)
            for n in t.findall(EDM + "NavigationProperty"):
                target = f"microsoft.graph.{t.get('Name')}/{n.get('Name')}" if ns == "microsoft.graph" else f"{ns}.{t.get('Name')}/{n.get('Name')}"
                if n.get("ContainsTarget") == "true" and target not in refused:
                    insertable.add(target)
        for op in schema.findall(EDM + "Action") + schema.findall(EDM + "Function"):
            params = op.findall(EDM + "Parameter")
            if op.get("IsBound") == "true" and params:
                bound.setdefault(op.get("Name"), []).append((op.tag == EDM + "Action", qualified(params[0].get("Type"))))
        for container in schema.findall(EDM + "EntityContainer"):
            sets.update({s.get("Name"): qualified(s.get("EntityType")) for s in container.findall(EDM + "EntitySet")})
            singletons.update({s.get("Name"): qualified(s.get("Type")) for s in container.findall(EDM + "Singleton")})
    return types, bound, sets, singletons, insertable


def ancestry(types, name):
    while name:
        yield name
        name = types.get(name, ("", {}))[0]


def resolve(model, method, template):
    types, bound, sets, singletons, insertable = model
    segments = template.split("/")
    creatable = False
    first = segments[0]
    if first in sets:
        current, many = sets[first], True
    elif first in singletons:
        current, many = singletons[first], False
    else:
        raise SystemExit(f"{method} {template}: no entity set or singleton {first}")
    action = False
    for segment in segments[1:]:
        if many and segment.startswith("{"):
            many = False
        elif many and segment.startswith("microsoft.graph."):
            if current not in ancestry(types, segment):
                raise SystemExit(f"{method} {template}: {segment} is not a {current}")
            current = segment
        elif not many:
            owner = next((t for t in ancestry(types, current) if segment in types.get(t, ("", {}))[1]), None)
            nav = types[owner][1][segment] if owner else None
            if nav is not None:
                many = nav.startswith("Collection(")
                creatable = many and f"{owner}/{segment}" in insertable
                current = qualified(nav[len("Collection("):-1] if many else nav)
                continue
            ops = [(is_action, b) for is_action, b in bound.get(segment, []) if b in ancestry(types, current)]
            if not ops:
                raise SystemExit(f"{method} {template}: {current} has no navigation property or bound operation {segment}")
            action = ops[0][0]
        else:
            raise SystemExit(f"{method} {template}: cannot follow {segment}")
    allowed = {"POST"} if action else (({"GET", "POST"} if creatable else {"GET"}) if many else {"GET", "PATCH", "DELETE"})
    if method not in allowed:
        raise SystemExit(f"{method} {template}: only {sorted(allowed)} there")


def main():
    csdl, commit = sys.argv[1], sys.argv[2]
    model = load(csdl)
    methods = []
    for method, template, headers in WANTED:
        resolve(model, method, template)
        methods.append({"id": f"{method} /{template}", "httpMethod": method, "path": f"v1.0/{template}", "query": [], "headers": headers})
    print(json.dumps({
        "source": [{
            "name": "Microsoft Graph v1.0 metadata (CSDL); OData system query options; ConsistencyLevel from 'Advanced query capabilities on Microsoft Entra ID objects'",
            "url": f"https://github.com/microsoftgraph/msgraph-metadata/blob/{commit}/schemas/v1.0-Prod.csdl",
            "version": commit,
        }],
        "globalQuery": SYSTEM_QUERY,
        "globalHeaders": ["authorization"],
        "methods": methods,
        "otherEndpoints": [{"httpMethod": "POST", "path": "/{tenant}/oauth2/v2.0/token"}],
    }, indent=2))


main()
