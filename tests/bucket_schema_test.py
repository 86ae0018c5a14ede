#!/usr/bin/env python3
"""docs/bucket-definition.schema.json against the definitions the repo shows and the engine.

1. The schema is a valid draft 2020-12 schema.
2. Every definition in examples/buckets/ (and its beyond/ folder), in the docs' ```json
   blocks (docs/*.md, README.md), in the docs' curl bodies for /v1/buckets, in
   examples/embed, and a list of §3 variants (every duration form, compatibility fields)
   validates. A docs block preceded by `<!-- schema: refused -->` must fail instead.
3. A list of malformed definitions that a schema can express fails it.
4. The engine agrees, where it supports the shape: a real bucketd defines every valid
   definition (in order, so bucket legs find their buckets) and refuses every malformed one
   with a 400, through POST /v1/buckets and POST /v1/buckets/preview alike (same field).
   Which SPEC §3b constructs the engine supports is probed first (a minimal definition of
   each); a definition using one it does not support yet is checked against the schema only,
   and the test says so. When the engine gains a construct, its cases become engine checks
   without a change here.

Usage: bucket_schema_test.py SCHEMA REPO_ROOT BUCKETD_BINARY (CTest passes them).
Needs jsonschema (Debian: python3-jsonschema, installed by tools/setup.sh).
"""
import glob
import http.client
import json
import os
import re
import shutil
import sys
import tempfile

import jsonschema

from bucketd_process import Server

# --- what the repo shows -------------------------------------------------------------------


def definitions_in_file(path):
    with open(path) as f:
        doc = json.load(f)
    return doc if isinstance(doc, list) else [doc]


def looks_like_definition(doc):
    return isinstance(doc, dict) and "id" in doc and ("criteria" in doc or "kind" in doc) \
        and "counts" not in doc


def docs_definitions(root):
    """(origin, definition, refused) from the docs' json blocks and curl bodies."""
    found = []
    files = sorted(glob.glob(os.path.join(root, "docs", "*.md"))) + [os.path.join(root, "README.md")]
    for path in files:
        with open(path) as f:
            text = f.read()
        rel = os.path.relpath(path, root)
        for m in re.finditer(r"(<!-- schema: refused -->\s*)?```json\n(.*?)```", text, re.S):
            try:
                doc = json.loads(m.group(2))
            except json.JSONDecodeError:
                continue
            line = text.count("\n", 0, m.start()) + 1
            for d in doc if isinstance(doc, list) else [doc]:
                if looks_like_definition(d):
                    found.append((f"{rel}:{line}", d, m.group(1) is not None))
        for m in re.finditer(r"curl [^\n]*?(-X (PUT|POST) )?\S*/v1/buckets(/[^/\s]+)?\s+-d '(\{.*?\})'",
                             text):
            if "-X PATCH" in m.group(0):
                continue
            doc = json.loads(m.group(4))
            if m.group(3) and m.group(3) != "/preview" and "id" not in doc:
                doc["id"] = m.group(3)[1:]  # a PUT body takes its id from the path
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{rel}:{line}", doc, False))
    for path in sorted(glob.glob(os.path.join(root, "examples", "embed", "*.cc"))):
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r'R"\((\{.*?\})\)"', text, re.S):
            doc = json.loads(m.group(1))
            if looks_like_definition(doc):
                found.append((os.path.relpath(path, root), doc, False))
    return found


def event(**fields):
    return {"type": "event", "eventName": "used", "check": "exists", **fields}


def bucket(criteria=None, **fields):
    d = {"id": "x", **fields}
    if criteria is not None:
        d["criteria"] = criteria
    return d


# §3 variants the engine takes today: the schema must take them too.
VALID = [
    ("duration string parts", bucket(event(within="1d12h30m15s500ms"))),
    ("duration weeks", bucket(event(within="2w"))),
    ("duration integer ms", bucket(event(within=86400000))),
    ("duration object", bucket(event(within={"hours": 1.5, "minutes": 30}))),
    ("duration object days", bucket(event(within={"days": 7, "milliseconds": 0}))),
    ("count without threshold", bucket(event(check="count"))),
    ("count with threshold", bucket(event(check="count", operator="eq", value=0, within="7d"))),
    ("not_exists within", bucket(event(check="not_exists", within="7d"))),
    ("property eq null", bucket({"type": "property", "property": "p", "operator": "eq", "value": None})),
    ("property eq object", bucket({"type": "property", "property": "p", "operator": "eq",
                                   "value": {"a": [1]}})),
    ("exists with a value sent along", bucket({"type": "property", "property": "p",
                                               "operator": "exists", "value": ""})),
    ("contains", bucket({"type": "property", "property": "p", "operator": "contains", "value": "x"})),
    ("nested composite", bucket({"type": "composite", "operator": "or", "conditions": [
        {"type": "composite", "operator": "and", "conditions": [event()]},
        {"type": "property", "property": "p", "operator": "gte", "value": -1.5}]})),
    ("manual", {"id": "m", "kind": "manual", "name": "M", "description": ""}),
    ("everything", {"id": "all.fields_1", "name": "All", "description": "d", "enabled": False,
                    "kind": "dynamic", "criteria": event(within="7d"),
                    "entryLimit": "once_per_period", "entryPeriod": "7d", "minDwell": "1h",
                    "maxDwell": "14d", "dwell": [{"after": "1d"}, {"every": 3600000}],
                    "reconcileJoins": False, "timeBased": True, "fastExpiry": False,
                    "reconcileEvery": "5m"}),
]

# Malformed definitions a schema can express. Each is refused by the schema, and by the
# engine when it supports the constructs the definition uses.
P = {"type": "property", "property": "p"}
SEQ = {"type": "sequence", "steps": [{"eventName": "a"}, {"eventName": "b"}], "within": "15m",
       "outcome": "abandoned"}
SUM = event(eventName="order.completed", check="sum", property="amount", operator="gte", value=100)
BKT = {"type": "bucket", "bucketId": "probe-base", "check": "member"}
REFUSED = [
    # §3
    ("unknown top-level field", {**bucket(event()), "colour": "red"}),
    ("typo of criteria", {"id": "x", "critera": event()}),
    ("unknown field in a leg", bucket(event(windowx="7d"))),
    ("unknown field in a dwell reaction", bucket(event(), dwell=[{"after": "1d", "label": "a"}])),
    ("unknown criteria type", bucket({"type": "segment", "segmentId": "s"})),
    ("criteria not an object", bucket(["event"])),
    ("missing type", bucket({"eventName": "used", "check": "exists"})),
    ("property operator unknown", bucket({**P, "operator": "like", "value": "a%"})),
    ("property ordering on a string", bucket({**P, "operator": "gt", "value": "10"})),
    ("contains on a number", bucket({**P, "operator": "contains", "value": 1})),
    ("eq without value", bucket({**P, "operator": "eq"})),
    ("property without operator", bucket({**P, "value": 1})),
    ("empty property key", bucket({"type": "property", "property": "", "operator": "exists"})),
    ("count with operator only", bucket(event(check="count", operator="gte"))),
    ("count with value only", bucket(event(check="count", value=3))),
    ("count negative", bucket(event(check="count", operator="gte", value=-1))),
    ("count fractional", bucket(event(check="count", operator="gte", value=2.5))),
    ("count operator unknown", bucket(event(check="count", operator="ge", value=2))),
    ("exists with an operator", bucket(event(operator="gt", value=1))),
    ("unknown check", bucket(event(check="some"))),
    ("reserved event name", bucket(event(eventName="bucket:entered:x"))),
    ("empty event name", bucket(event(eventName=""))),
    ("event name too long", bucket(event(eventName="e" * 201))),
    ("duration word", bucket(event(within="30days"))),
    ("duration zero", bucket(event(within="0d"))),
    ("duration fraction", bucket(event(within="1.5h"))),
    ("duration no unit", bucket(event(within="30"))),
    ("duration empty", bucket(event(within=""))),
    ("duration signed", bucket(event(within="+3d"))),
    ("duration negative ms", bucket(event(within=-5))),
    ("duration zero ms", bucket(event(within=0))),
    ("duration fractional ms", bucket(event(within=1.5))),
    ("duration over a century", bucket(event(within=3155760000001))),
    ("duration empty object", bucket(event(within={}))),
    ("duration object of zeros", bucket(event(within={"hours": 0}))),
    ("duration object unknown unit", bucket(event(within={"weeks": 1}))),
    ("duration object negative", bucket(event(within={"hours": -1, "days": 1}))),
    ("dwell with after and every", bucket(event(), dwell=[{"after": "1d", "every": "1d"}])),
    ("dwell with neither", bucket(event(), dwell=[{}])),
    ("dwell repeated", bucket(event(), dwell=[{"after": "1d"}, {"after": "1d"}])),
    ("dwell over 32", bucket(event(), dwell=[{"after": f"{i}h"} for i in range(1, 34)])),
    ("composite without conditions", bucket({"type": "composite", "operator": "and"})),
    ("composite empty", bucket({"type": "composite", "operator": "and", "conditions": []})),
    ("composite xor", bucket({"type": "composite", "operator": "xor", "conditions": [event()]})),
    ("manual with criteria", {"id": "x", "kind": "manual", "criteria": event()}),
    ("dynamic without criteria", {"id": "x"}),
    ("kind unknown", {"id": "x", "kind": "static"}),
    ("no id", {"criteria": event()}),
    ("id with a space", {"id": "a b", "criteria": event()}),
    ("id ..", {"id": "..", "criteria": event()}),
    ("id too long", {"id": "a" * 129, "criteria": event()}),
    ("empty name", {**bucket(event()), "name": ""}),
    ("entryLimit unknown", {**bucket(event()), "entryLimit": "twice"}),
    ("enabled not a boolean", {**bucket(event()), "enabled": "yes"}),
    ("timeBased not a boolean", {**bucket(event()), "timeBased": 1}),
    # §3b: where
    ("where with a time operator", bucket(event(where=[{"property": "plan", "operator": "before",
                                                        "value": "+1d"}]))),
    ("where with an unknown operator", bucket(event(where=[{"property": "plan", "operator": "like",
                                                            "value": "p%"}]))),
    ("where item unknown field", bucket(event(where=[{"property": "plan", "operator": "eq",
                                                      "value": "pro", "type": "property"}]))),
    ("where item without operator", bucket(event(where=[{"property": "plan", "value": "pro"}]))),
    ("where ordering on a string", bucket(event(where=[{"property": "n", "operator": "gt",
                                                        "value": "1"}]))),
    ("where not a list", bucket(event(where={"property": "plan", "operator": "eq", "value": "pro"}))),
    ("where empty", bucket(event(where=[]))),
    # §3b: aggregates
    ("sum without property", bucket({k: v for k, v in SUM.items() if k != "property"})),
    ("sum without operator", bucket({k: v for k, v in SUM.items() if k != "operator"})),
    ("sum without value", bucket({k: v for k, v in SUM.items() if k != "value"})),
    ("sum without operator and value", bucket({k: v for k, v in SUM.items()
                                               if k not in ("operator", "value")})),
    ("avg with a string value", bucket({**SUM, "check": "avg", "value": "10"})),
    ("max with an unknown operator", bucket({**SUM, "check": "max", "operator": "above"})),
    ("distinct fractional", bucket({**SUM, "check": "distinct", "property": "sku", "value": 2.5})),
    ("distinct without property", bucket(event(check="distinct", operator="gte", value=3))),
    ("aggregate property empty", bucket({**SUM, "property": ""})),
    ("count with a property", bucket(event(check="count", property="amount", operator="gte",
                                           value=1))),
    # §3b: time properties
    ("before unsigned", bucket({**P, "property": "trialEndsAt", "operator": "before",
                                "value": "3d"})),
    ("before a word", bucket({**P, "property": "trialEndsAt", "operator": "before",
                              "value": "+3days"})),
    ("before a number", bucket({**P, "property": "trialEndsAt", "operator": "before",
                                "value": 259200000})),
    ("after without value", bucket({**P, "property": "trialEndsAt", "operator": "after"})),
    # §3b: first_seen
    ("first_seen without within", bucket(event(check="first_seen"))),
    ("first_seen with a threshold", bucket(event(check="first_seen", within="7d", operator="gte",
                                                 value=1))),
    # §3b: sequences
    ("sequence of 1 step", bucket({**SEQ, "steps": [{"eventName": "a"}]})),
    ("sequence of 6 steps", bucket({**SEQ, "steps": [{"eventName": f"s{i}"} for i in range(6)]})),
    ("sequence without steps", bucket({k: v for k, v in SEQ.items() if k != "steps"})),
    ("sequence without within", bucket({k: v for k, v in SEQ.items() if k != "within"})),
    ("sequence without outcome", bucket({k: v for k, v in SEQ.items() if k != "outcome"})),
    ("sequence outcome unknown", bucket({**SEQ, "outcome": "done"})),
    ("sequence step without eventName", bucket({**SEQ, "steps": [{"eventName": "a"},
                                                                 {"where": []}]})),
    ("sequence step unknown field", bucket({**SEQ, "steps": [{"eventName": "a"},
                                                             {"eventName": "b", "within": "1m"}]})),
    ("sequence step reserved name", bucket({**SEQ, "steps": [{"eventName": "a"},
                                                             {"eventName": "bucket:left:x"}]})),
    ("sequence step bad where", bucket({**SEQ, "steps": [
        {"eventName": "a", "where": [{"property": "p", "operator": "nope", "value": 1}]},
        {"eventName": "b"}]})),
    ("sequence lookback zero", bucket({**SEQ, "lookback": "0d"})),
    ("sequence unknown field", bucket({**SEQ, "eventName": "a"})),
    # §3b: bucket legs
    ("bucket leg without bucketId", bucket({"type": "bucket", "check": "member"})),
    ("bucket leg without check", bucket({"type": "bucket", "bucketId": "probe-base"})),
    ("bucket leg check unknown", bucket({**BKT, "check": "in"})),
    ("bucket leg bad bucketId", bucket({**BKT, "bucketId": "a b"})),
    ("bucket leg for negative", bucket({**BKT, "for": "-1d"})),
    ("bucket leg unknown field", bucket({**BKT, "within": "1d"})),
]

# A minimal definition of each SPEC §3b construct, to learn whether the engine takes it.
PROBE_BASE = {"id": "probe-base", "criteria": event(within="7d")}
PROBES = {
    "where": event(within="30d", where=[{"property": "plan", "operator": "eq", "value": "pro"}]),
    "aggregate": SUM,
    "time": {**P, "property": "trialEndsAt", "operator": "before", "value": "+3d"},
    "first_seen": event(check="first_seen", within="7d"),
    "sequence": SEQ,
    "bucket": BKT,
}
AGGREGATES = {"sum", "avg", "min", "max", "distinct"}


def constructs(node, out=None):
    """The §3b constructs a (possibly malformed) criteria tree uses."""
    out = set() if out is None else out
    if isinstance(node, list):
        for item in node:
            constructs(item, out)
        return out
    if not isinstance(node, dict):
        return out
    kind = node.get("type")
    if kind in ("sequence", "bucket"):
        out.add(kind)
    if kind == "property" and node.get("operator") in ("before", "after"):
        out.add("time")
    if kind == "event":
        if "where" in node:
            out.add("where")
        if node.get("check") in AGGREGATES or "property" in node:
            out.add("aggregate")
        if node.get("check") == "first_seen":
            out.add("first_seen")
    for key in ("conditions", "steps"):
        if key in node:
            constructs(node[key], out)
    return out


def uses(definition):
    return constructs(definition.get("criteria")) if isinstance(definition, dict) else set()


# --- the engine ----------------------------------------------------------------------------


class Engine:
    def __init__(self, server):
        self.server = server

    def call(self, method, path, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        data = json.dumps(body) if not isinstance(body, str) else body
        conn.request(method, path, body=data, headers={
            "Host": f"127.0.0.1:{self.server.port}", "Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        return response.status, json.loads(text) if text else None

    def define(self, definition):
        return self.call("PUT", f"/v1/buckets/{definition['id']}", definition)


def main():
    schema_path, root, binary = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(schema_path) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    failures = []

    def errors_of(definition):
        return [f"at {list(e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(definition)]

    # The definitions the repo shows, in the order they are defined in the engine.
    valid = []
    for folder in ("examples/buckets", "examples/buckets/beyond"):
        files = sorted(glob.glob(os.path.join(root, folder, "*.json")))
        assert files, f"no definitions in {folder}"
        for path in files:
            for d in definitions_in_file(path):
                valid.append((os.path.relpath(path, root), d))
    documented = docs_definitions(root)
    assert any(origin.startswith("docs/buckets.md") for origin, _, _ in documented), \
        "no definitions found in docs/buckets.md"
    valid += [(origin, d) for origin, d, refused in documented if not refused]
    valid += [(f"variant: {name}", d) for name, d in VALID]
    refused = [(f"case: {name}", d) for name, d in REFUSED]
    refused += [(origin, d) for origin, d, is_refused in documented if is_refused]

    for origin, d in valid:
        errors = errors_of(d)
        if errors:
            failures.append(f"{origin}: valid, but the schema refuses it: {errors[:3]}")
    for origin, d in refused:
        if not errors_of(d):
            failures.append(f"{origin}: malformed, but the schema accepts it: {json.dumps(d)}")

    # The engine, on a throwaway data dir.
    work = tempfile.mkdtemp(prefix="bucketd-schema-")
    engine_checked = 0
    schema_only = {}
    try:
        server = Server(binary, os.path.join(work, "data"))
        try:
            engine = Engine(server)
            status, body = engine.define(PROBE_BASE)
            assert status in (200, 201), f"probe-base: {status} {body}"
            supported = set()
            for name, criteria in PROBES.items():
                status, body = engine.define({"id": f"probe-{name}", "criteria": criteria})
                if status in (200, 201):
                    supported.add(name)
            print(f"engine supports: {sorted(supported) or 'none'} of {sorted(PROBES)}")

            for origin, d in valid:
                missing = uses(d) - supported
                if missing:
                    schema_only.setdefault(origin, missing)
                    continue
                status, body = engine.define(d)
                engine_checked += 1
                if status not in (200, 201):
                    failures.append(f"{origin}: valid by the schema, refused by the engine: "
                                    f"{status} {body}")
            _, before = engine.call("GET", "/v1/state", "")
            for origin, d in refused:
                missing = uses(d) - supported
                if missing:
                    schema_only.setdefault(origin, missing)
                    continue
                engine_checked += 1
                preview_status, preview = engine.call("POST", "/v1/buckets/preview", d)
                define_status, define = engine.call("POST", "/v1/buckets", d)
                if define_status != 400 or preview_status != 400:
                    failures.append(f"{origin}: malformed, but the engine answered {define_status} "
                                    f"to a define and {preview_status} to a preview: "
                                    f"{define} {preview}")
                elif preview["error"].get("field") != define["error"].get("field"):
                    failures.append(f"{origin}: the preview names {preview['error']} where a "
                                    f"define names {define['error']}")
            # A refusal changes nothing.
            _, after = engine.call("GET", "/v1/state", "")
            if after["logSeq"] != before["logSeq"]:
                failures.append(f"the refusals moved the log from {before['logSeq']} to "
                                f"{after['logSeq']}")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for origin, missing in sorted(schema_only.items()):
        print(f"schema only (the engine does not take {', '.join(sorted(missing))} yet): {origin}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"OK: {len(valid)} valid and {len(refused)} malformed definitions against the schema; "
          f"{engine_checked} of them against the engine, {len(schema_only)} schema only")


if __name__ == "__main__":
    main()
