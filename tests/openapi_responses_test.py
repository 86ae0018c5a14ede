#!/usr/bin/env python3
"""Every response of a real bucketd is what docs/openapi.json says it is.

Starts the built server on a free loopback port with a manual clock, drives a scenario that
reaches every documented operation (events, definitions, members, the clock, the transition
stream with its filters and its 409, history, past members, explain, snapshots, backups,
errors; a bucket with every leg of SPEC §3b and events with their own properties), and
validates each response's body against the schema the document gives for that operation,
status and content type. Fails on a status or a content type the document does not list, on
a body its schema refuses, and on an operation the scenario never saw succeed.

Usage: openapi_responses_test.py BUCKETD_BINARY OPENAPI_JSON (CTest passes both).
Needs jsonschema (Debian: python3-jsonschema, installed by tools/setup.sh).
"""
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.parse

import jsonschema

from bucketd_process import START, Server


class Contract:
    """The document's operations, and a validator per response schema."""

    def __init__(self, document):
        self.document = document
        self.templates = []  # (regex, template) for every path of the document
        for template in document["paths"]:
            pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
            self.templates.append((re.compile(pattern), template))
        self.seen = set()  # (method, template, status)

    def template_of(self, path):
        matches = [t for regex, t in self.templates if regex.match(path)]
        # A literal segment wins over a parameter (none overlap today, but be exact).
        matches.sort(key=lambda t: t.count("{"))
        return matches[0] if matches else None

    def check(self, method, path, status, content_type, body):
        template = self.template_of(path)
        assert template is not None, f"{method} {path}: no path of the document matches"
        operation = self.document["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template}: not an operation of the document"
        response = operation["responses"].get(str(status))
        assert response is not None, (
            f"{method} {template} answered {status}, which the document does not list: {body!r}")
        if "$ref" in response:
            response = self.resolve(response["$ref"])
        media = content_type.split(";")[0].strip()
        content = response.get("content", {})
        assert media in content, (
            f"{method} {template} {status}: content type {media}, documented {list(content)}")
        schema = content[media]["schema"]
        if media == "application/json":
            instance = json.loads(body)
            # The components travel with the schema so that its "#/components/..." refs resolve.
            root = {"allOf": [schema], "components": self.document["components"]}
            validator = jsonschema.Draft202012Validator(root)
            errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
            assert not errors, (
                f"{method} {template} {status}: the body does not match the document:\n"
                + "\n".join(f"  at {list(e.path)}: {e.message}" for e in errors[:5])
                + f"\n  body: {body[:2000]!r}")
        self.seen.add((method.upper(), template, status))

    def resolve(self, pointer):
        node = self.document
        for part in pointer.lstrip("#/").split("/"):
            node = node[part]
        return node

    def unexercised(self):
        """The operations no response with a 2xx status reached."""
        succeeded = {(m, t) for m, t, s in self.seen if 200 <= s < 300}
        return sorted(f"{m.upper()} {t}" for t, item in self.document["paths"].items()
                      for m in item if (m.upper(), t) not in succeeded)


class Client:
    def __init__(self, server, contract, token=None):
        self.server = server
        self.contract = contract
        self.token = token

    def call(self, method, path, body=None, content_type="application/json", headers=None,
             expect=None):
        """Sends the request, validates the response, checks the status when `expect` is given,
        and returns the parsed JSON body (or the text of a non-JSON body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        sent = {"Host": f"127.0.0.1:{self.server.port}"}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
            sent["Content-Type"] = content_type
        elif method in ("POST", "PUT", "PATCH"):
            data = b""
        sent.update(headers or {})
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        status = response.status
        ctype = response.getheader("Content-Type", "")
        self.contract.check(method, urllib.parse.urlsplit(path).path, status, ctype, text)
        if expect is not None:
            assert status == expect, f"{method} {path}: {status}, expected {expect}: {text}"
        return json.loads(text) if ctype.startswith("application/json") else text


def scenario(c, document_bytes):
    # Operations.
    c.call("GET", "/healthz", expect=200)
    c.call("GET", "/readyz", expect=200)
    assert "bucketd_build_info" in c.call("GET", "/metrics", expect=200)
    served = c.call("GET", "/v1/openapi.json", expect=200)
    assert served == json.loads(document_bytes)
    state = c.call("GET", "/v1/state", expect=200)
    stream_id = state["streamId"]

    # Definitions: a windowed count with dwell reactions and maxDwell, a property bucket, a
    # composite, a manual one.
    c.call("POST", "/v1/buckets", {
        "id": "power", "name": "Power users", "description": "3 uses in 7 days",
        "criteria": {"type": "event", "eventName": "used", "check": "count",
                     "operator": "gte", "value": 3, "within": "7d"},
        "entryLimit": "unlimited", "minDwell": "1h", "maxDwell": "30d",
        "dwell": [{"after": "2d"}, {"every": "1d"}]}, expect=201)
    c.call("POST", "/v1/buckets", {
        "id": "trial", "name": "Trial",
        "criteria": {"type": "property", "property": "plan", "operator": "eq", "value": "trial"}},
        expect=201)
    c.call("PUT", "/v1/buckets/mixed", {
        "name": "Mixed", "entryLimit": "once_per_period", "entryPeriod": {"days": 7},
        "criteria": {"type": "composite", "operator": "or", "conditions": [
            {"type": "property", "property": "plan", "operator": "exists"},
            {"type": "event", "eventName": "signup", "check": "exists"}]}}, expect=201)
    c.call("PUT", "/v1/buckets/mixed", {
        "id": "mixed", "name": "Mixed", "description": "replaced",
        "criteria": {"type": "event", "eventName": "signup", "check": "exists"}}, expect=200)
    c.call("PUT", "/v1/buckets/vip", {"name": "VIP", "kind": "manual"}, expect=201)
    # Every leg of SPEC §3b, so that a Bucket response shows each in its canonical form.
    c.call("PUT", "/v1/buckets/spenders", {
        "name": "Spenders", "criteria": {"type": "composite", "operator": "or", "conditions": [
            {"type": "event", "eventName": "purchase", "check": "sum", "property": "amount",
             "operator": "gte", "value": 100, "within": "30d",
             "where": [{"property": "plan", "operator": "eq", "value": "pro"},
                       {"property": "gift", "operator": "not_exists"}]},
            {"type": "event", "eventName": "purchase", "check": "distinct", "property": "sku",
             "operator": "gte", "value": 2},
            {"type": "event", "eventName": "purchase", "check": "avg", "property": "amount",
             "operator": "gt", "value": 99.5},
            {"type": "event", "eventName": "signup", "check": "first_seen", "within": "7d"},
            {"type": "event", "eventName": "used", "check": "count", "within": {"days": 1},
             "where": [{"property": "feature", "operator": "contains", "value": "export"}]},
            {"type": "property", "property": "trialEndsAt", "operator": "before",
             "value": "+3d"},
            {"type": "property", "property": "trialEndsAt", "operator": "after", "value": "-1d"},
            {"type": "sequence", "steps": [
                {"eventName": "checkout.started"},
                {"eventName": "payment.completed",
                 "where": [{"property": "ok", "operator": "eq", "value": True}]}],
             "within": "15m", "outcome": "abandoned", "lookback": "1d"},
            {"type": "bucket", "bucketId": "trial", "check": "member", "for": "1d"}]}},
        expect=201)
    spenders = c.call("GET", "/v1/buckets/spenders", expect=200)
    assert spenders["criteria"]["conditions"][5]["value"] == "+259200000ms", spenders
    c.call("POST", "/v1/buckets", {"id": "vip", "name": "VIP", "kind": "manual"}, expect=409)
    c.call("POST", "/v1/buckets", "{not json", expect=400)
    c.call("POST", "/v1/buckets", {"id": "x", "name": "X", "criteria": {"type": "nope"}},
           expect=400)
    c.call("POST", "/v1/buckets", {"id": "y", "name": "Y", "kind": "manual", "colour": 1},
           expect=400)
    c.call("GET", "/v1/buckets", expect=200)
    c.call("GET", "/v1/buckets/power", expect=200)
    c.call("GET", "/v1/buckets/nope", expect=404)
    c.call("PATCH", "/v1/buckets/trial", {"enabled": False}, expect=200)
    c.call("PATCH", "/v1/buckets/trial", {"enabled": True}, expect=200)
    c.call("PATCH", "/v1/buckets/trial", {"enabled": "yes"}, expect=400)
    c.call("PATCH", "/v1/buckets/nope", {"enabled": True}, expect=404)

    # Events: one, a JSON batch with refusals, NDJSON, the error statuses of a body.
    c.call("POST", "/v1/events", {"userId": "u1", "event": "signup", "email": "u1@example.com",
                                  "contactProperties": {"plan": "trial", "seats": 3}}, expect=200)
    batch = [{"userId": u, "event": "used", "occurredAt": START, "idempotencyKey": f"{u}-{i}"}
             for u in ("u1", "u2") for i in range(3)]
    batch += [{"userId": "u3"}, {"userId": "u4", "event": "bucket:entered:x"}]
    result = c.call("POST", "/v1/events", batch, expect=200)
    assert result["accepted"] == 6 and len(result["rejected"]) == 2
    assert c.call("POST", "/v1/events", batch[:1], expect=200)["duplicates"] == 1
    ndjson = '{"userId":"u3","event":"used"}\n{oops\n{"userId":"u3","event":"signup"}\n'
    c.call("POST", "/v1/events", ndjson, content_type="application/x-ndjson", expect=200)
    # Events with their own properties (SPEC §3b).
    c.call("POST", "/v1/events", {"userId": "u1", "event": "purchase",
                                  "properties": {"amount": 120, "plan": "pro", "sku": "a1"},
                                  "contactProperties": {"trialEndsAt": "2026-01-05T00:00:00Z"}},
           expect=200)
    c.call("POST", "/v1/events", {"userId": "u2", "event": "checkout.started",
                                  "properties": {"cart": 3, "gift": False}}, expect=200)
    c.call("POST", "/v1/events", {"userId": "u1", "event": "purchase",
                                  "properties": {"nested": {"no": 1}}}, expect=400)
    c.call("POST", "/v1/events", {"userId": "u1"}, expect=400)
    c.call("POST", "/v1/events", "userId=u1", content_type="application/x-www-form-urlencoded",
           expect=415)
    c.call("POST", "/v1/events", {"userId": "u1", "event": "x"},
           headers={"Content-Encoding": "gzip"}, expect=415)
    c.call("POST", "/v1/events", {"userId": "u1", "event": "x"},
           headers={"Host": "evil.example:80"}, expect=403)
    c.call("GET", "/v1/state", headers={"Host": "127.0.0.1:1", "Origin": "http://evil.example"},
           expect=403)
    c.call("GET", "/v1/buckets/power/count", headers={"X-Padding": "a" * 17000}, expect=431)

    # Members: manual add and remove, lookups.
    c.call("POST", "/v1/buckets/vip/members", {"userId": "a/b"}, expect=201)
    c.call("POST", "/v1/buckets/vip/members", {"userId": "u1"}, expect=201)
    c.call("POST", "/v1/buckets/vip/members", {"user": "u1"}, expect=400)
    c.call("POST", "/v1/buckets/nope/members", {"userId": "u1"}, expect=404)
    c.call("GET", "/v1/buckets/vip/members/a%2Fb", expect=200)
    c.call("GET", "/v1/buckets/vip/members/zz", expect=404)
    c.call("DELETE", "/v1/buckets/vip/members/a%2Fb", expect=200)
    c.call("DELETE", "/v1/buckets/vip/members/a%2Fb", expect=404)
    c.call("GET", "/v1/buckets/power/members?limit=1", expect=200)
    c.call("GET", "/v1/buckets/power/members?limit=0", expect=400)
    c.call("GET", "/v1/buckets/power/members?status=gone", expect=400)
    c.call("GET", "/v1/buckets/nope/members", expect=404)

    # The clock: dwell reactions, window leaves, maxDwell; backwards is a 409.
    c.call("POST", "/v1/clock", {"now": "2026-01-03T00:00:00Z"}, expect=200)
    c.call("POST", "/v1/clock", {"now": "2026-01-09T00:00:00Z"}, expect=200)
    c.call("POST", "/v1/clock", {"now": "2026-01-02T00:00:00Z"}, expect=409)
    c.call("POST", "/v1/clock", {"then": 1}, expect=400)
    c.call("POST", "/v1/sweep", expect=200)

    # The stream: every kind, filters, a cursor past the end, bad parameters.
    page = c.call("GET", "/v1/transitions?after=0&limit=10000", expect=200)
    kinds = {t["kind"] for t in page["transitions"]}
    assert kinds == {"entered", "left", "dwell"}, kinds
    assert page["streamId"] == stream_id and page["next"] == page["lastSeq"]
    c.call("GET", "/v1/transitions?after=0&limit=2", expect=200)
    c.call("GET", "/v1/transitions?bucket=power&kind=entered,left&kind=dwell", expect=200)
    left = c.call("GET", "/v1/transitions?kind=left", expect=200)
    assert left["transitions"] and all(t["kind"] == "left" for t in left["transitions"])
    c.call(f"GET", f"/v1/transitions?after={page['lastSeq']}&wait=0s", expect=200)
    ahead = c.call("GET", f"/v1/transitions?after={page['lastSeq'] + 100}", expect=409)
    assert ahead["error"]["lastSeq"] == page["lastSeq"]
    assert ahead["error"]["streamId"] == stream_id
    c.call("GET", "/v1/transitions?kind=joined", expect=400)
    c.call("GET", "/v1/transitions?limit=10001", expect=400)
    c.call("GET", "/v1/transitions?wait=31", expect=400)
    c.call("GET", "/v1/transitions?bucket=a&bucket=b", expect=400)

    # Queries after the clock moved.
    c.call("GET", "/v1/buckets/power/members?status=left", expect=200)
    c.call("GET", "/v1/buckets/vip/members?status=active", expect=200)
    c.call("GET", "/v1/buckets/power/count", expect=200)
    c.call("GET", "/v1/buckets/nope/count", expect=404)
    c.call("GET", "/v1/buckets/power/metrics", expect=200)
    c.call("GET", "/v1/buckets/nope/metrics", expect=404)
    history = c.call("GET", "/v1/buckets/power/history?from=2026-01-01T00:00:00Z&step=1d",
                     expect=200)
    assert len(history["steps"]) == 8
    c.call("GET", "/v1/buckets/power/history?from=1767225600000&to=1767312000000&step=3600000",
           expect=200)
    c.call("GET", "/v1/buckets/power/history?step=1d", expect=400)
    c.call("GET", "/v1/buckets/power/history?from=2026-01-01T00:00:00Z&step=0", expect=400)
    c.call("GET", "/v1/buckets/nope/history?from=2026-01-01T00:00:00Z&step=1d", expect=404)
    c.call("GET", "/v1/users/u1/memberships", expect=200)
    c.call("GET", "/v1/users/nobody/memberships", expect=404)
    user = c.call("GET", "/v1/users/u1", expect=200)
    assert user["email"] == "u1@example.com" and user["properties"]["plan"] == "trial"
    assert user["events"]["used"]["count"] == 3, user
    c.call("GET", "/v1/users/nobody", expect=404)

    # Explain: legs of every kind, a manual bucket, the 404s; nothing logged.
    logged = c.call("GET", "/v1/state", expect=200)["logSeq"]
    explained = c.call("GET", "/v1/buckets/spenders/explain/u1", expect=200)
    assert explained["member"] and len(explained["legs"]) == 10, explained
    assert {leg["type"] for leg in explained["legs"]} == {
        "composite", "event", "property", "sequence", "bucket"}, explained
    c.call("GET", "/v1/buckets/spenders/explain/u2", expect=200)
    c.call("GET", "/v1/buckets/power/explain/u1", expect=200)
    c.call("GET", "/v1/buckets/vip/explain/u1", expect=200)
    c.call("GET", "/v1/buckets/nope/explain/u1", expect=404)
    c.call("GET", "/v1/buckets/power/explain/nobody", expect=404)
    assert c.call("GET", "/v1/state", expect=200)["logSeq"] == logged

    # Previews: a replacement of a stored bucket, a new one, refusals; nothing logged.
    logged = c.call("GET", "/v1/state", expect=200)["logSeq"]
    preview = c.call("POST", "/v1/buckets/preview", {
        "id": "power", "criteria": {"type": "event", "eventName": "used", "check": "exists"}},
        expect=200)
    assert preview["count"] == 3 and preview["sample"] == ["u1", "u2", "u3"], preview
    c.call("POST", "/v1/buckets/preview", {
        "id": "new", "criteria": {"type": "property", "property": "plan", "operator": "eq",
                                  "value": "trial"}}, expect=200)
    c.call("POST", "/v1/buckets/preview", {"id": "new", "criteria": {"type": "nope"}},
           expect=400)
    c.call("POST", "/v1/buckets/preview", {"id": "vip", "kind": "manual"}, expect=400)
    c.call("POST", "/v1/buckets/preview", "{not json", expect=400)
    assert c.call("GET", "/v1/state", expect=200)["logSeq"] == logged

    # Webhook subscriptions (nothing listens on the port: deliveries fail and retry, which
    # shows in the subscription's state).
    sub = c.call("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/hook", "bucket": "power",
                                                "kinds": ["entered"], "after": 0}, expect=201)
    assert sub["secret"]
    c.call("POST", "/v1/subscriptions", {"url": "http://198.51.100.7/hook"}, expect=400)
    c.call("POST", "/v1/subscriptions", {"url": "http://127.0.0.1:9/", "colour": 1}, expect=400)
    listed = c.call("GET", "/v1/subscriptions", expect=200)
    assert [s["id"] for s in listed["subscriptions"]] == [sub["id"]]
    got = c.call("GET", f"/v1/subscriptions/{sub['id']}", expect=200)
    assert "secret" not in got
    c.call("GET", "/v1/subscriptions/sub_nope", expect=404)
    c.call("DELETE", f"/v1/subscriptions/{sub['id']}", expect=200)
    c.call("DELETE", f"/v1/subscriptions/{sub['id']}", expect=404)

    # Snapshots, backups, state.
    c.call("POST", "/v1/snapshots", expect=201)
    c.call("POST", "/v1/admin/backup", expect=201)
    c.call("GET", "/v1/state", expect=200)

    # Contacts: delete, a later event for them (409), erase, errors.
    c.call("DELETE", "/v1/contacts/u2", expect=200)
    c.call("POST", "/v1/events", {"userId": "u2", "event": "used"}, expect=409)
    assert c.call("GET", "/v1/users/u2", expect=200)["deleted"] is True
    gone = c.call("GET", "/v1/buckets/power/explain/u2", expect=404)
    assert "deleted" in gone["error"]["message"], gone
    c.call("DELETE", "/v1/contacts/u3?erase=true", expect=200)
    c.call("DELETE", "/v1/contacts/u3?erase=maybe", expect=400)
    c.call("DELETE", "/v1/contacts/nobody", expect=404)

    # Buckets deleted last: their transitions stay in the stream.
    c.call("DELETE", "/v1/buckets/mixed", expect=200)
    c.call("DELETE", "/v1/buckets/mixed", expect=404)


def tokened(c):
    """With --auth-token: 401 without it, the document public, /healthz open; no backup dir."""
    c.call("GET", "/v1/state", expect=401)
    c.call("GET", "/v1/openapi.json", expect=200)
    c.call("GET", "/healthz", expect=200)
    c.token = "t0ken"
    c.call("GET", "/v1/state", headers={"Host": "any.example"}, expect=200)
    c.call("POST", "/v1/admin/backup", expect=409)


def main():
    binary, document_path = sys.argv[1], sys.argv[2]
    with open(document_path, "rb") as f:
        document_bytes = f.read()
    contract = Contract(json.loads(document_bytes))
    jsonschema.Draft202012Validator.check_schema(
        {"components": contract.document["components"]})
    work = tempfile.mkdtemp(prefix="bucketd-openapi-")
    try:
        server = Server(binary, os.path.join(work, "data"),
                        ["--backup-dir", os.path.join(work, "backups")])
        try:
            scenario(Client(server, contract), document_bytes)
        finally:
            server.stop()
        server = Server(binary, os.path.join(work, "data2"), ["--auth-token", "t0ken"])
        try:
            tokened(Client(server, contract))
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missing = contract.unexercised()
    assert not missing, "operations no 2xx response reached: " + ", ".join(missing)
    statuses = len(contract.seen)
    print(f"OK: {statuses} (operation, status) pairs validated against docs/openapi.json; "
          f"every one of {sum(len(i) for i in contract.document['paths'].values())} "
          "operations answered 2xx")


if __name__ == "__main__":
    main()
