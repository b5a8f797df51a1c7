"""A small Annuaire Santé FHIR API for the tests and bench/directory_fhir.py, on loopback
over HTTPS (a test CA): paged searchsets (``mailbox-mss-type``, ``mailbox-mss``,
``identifier``, ``_lastUpdated=gt``, ``_count``; next links over a snapshot of the result),
read, and FHIR Patch (R4 §2.41: add, insert, delete, replace on a path of the form
``Type.elem`` or ``Type.elem.where(field='value')``), conditional by ``identifier`` (404 when
nothing matches, 412 when several do). Resources and the searchset Bundles are validated
with fhir.resources (R4B models) after each patch and before they are served (validate=True);
429, 5xx and connections closed without an answer (status 0) are injected on demand
(:meth:`FhirServer.fail_next`). The ``ESANTE-API-KEY``
header is required when an api_key is set.

    python -m tests.fhir_server --entries 100000 --dir /tmp/x   # prints base_url, ca_file
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import ipaddress
import itertools
import json
import re
import ssl
import sys
import threading
import urllib.parse
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from directory.fhir import (
    API_KEY_HEADER,
    EMAIL_TYPE,
    ID_NAT_PS,
    ID_NAT_STRUCT,
    MSS_METADATA,
    TRE_R256,
    TRE_R257,
    metadata,
)

HOST = "127.0.57.1"  # this helper's loopback range (tests of the directory's FHIR source)
PAST = "2025-01-01T00:00:00Z"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def mailbox(address: str, kind: str = "PER", *, liste_rouge: bool = False,
            service: str | None = None) -> dict[str, Any]:
    """An as-mailbox-mss ContactPoint."""
    parts: list[dict[str, Any]] = [
        {"url": "type", "valueCodeableConcept": {"coding": [{"system": TRE_R257, "code": kind}]}},
        {"url": "listeRouge", "valueBoolean": liste_rouge}]
    if service:
        parts.append({"url": "service", "valueString": service})
    return {"system": "email", "value": address, "extension": [
        {"url": EMAIL_TYPE, "valueCoding": {"system": TRE_R256, "code": "MSSANTE"}},
        {"url": MSS_METADATA, "extension": parts}]}


def practitioner(rid: str, rpps: str, family: str, given: str,
                 telecom: list[dict[str, Any]], updated: str = PAST) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": rid,
            "meta": {"versionId": "1", "lastUpdated": updated}, "active": True,
            "identifier": [{"system": ID_NAT_PS, "value": "8" + rpps}],
            "name": [{"use": "official", "family": family, "given": [given]}],
            "telecom": telecom,
            "qualification": [{"code": {"coding": [{
                "system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                          "TRE-G15-ProfessionSante", "code": "10", "display": "Médecin"}]}}]}


def organization(rid: str, id_nat: str, name: str, city: str,
                 telecom: list[dict[str, Any]], updated: str = PAST) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": rid,
            "meta": {"versionId": "1", "lastUpdated": updated}, "active": True,
            "identifier": [{"system": ID_NAT_STRUCT, "value": id_nat}], "name": name,
            "address": [{"city": city, "postalCode": "75015"}], "telecom": telecom}


def generate(count: int, domain: str = "bench.mssante.fr") -> list[dict[str, Any]]:
    """*count* mailboxes: nine PER practitioners out of ten, the rest ORG organizations."""
    out = []
    for i in range(count):
        if i % 10:
            out.append(practitioner(f"p{i}", f"{10_000_000_000 + i}", f"NOM{i}", f"Prénom{i}",
                                    [mailbox(f"pro{i}@{domain}")]))
        else:
            out.append(organization(f"o{i}", f"1{750_000_000 + i}", f"Structure {i}",
                                    "Paris", [mailbox(f"org{i}@{domain}", "ORG")]))
    return out


class PatchError(ValueError):
    pass


_PATH = re.compile(r"^(?P<type>[A-Za-z]+)(?:\.(?P<elem>[a-zA-Z]+)"
                   r"(?:\.where\((?P<field>[a-zA-Z]+)\s*=\s*'(?P<value>[^']*)'\))?)?$")


def _value(op: dict[str, Any]) -> Any:
    for key, item in op.items():
        if key.startswith("value"):
            return copy.deepcopy(item)
    raise PatchError("operation without value")


def apply_patch(resource: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """FHIR Patch (R4 §2.41) on a copy of *resource*, for the paths mss sends."""
    if parameters.get("resourceType") != "Parameters":
        raise PatchError("the body is not a Parameters resource")
    out = copy.deepcopy(resource)
    for param in parameters.get("parameter") or ():
        if param.get("name") != "operation":
            raise PatchError(f"unexpected parameter {param.get('name')!r}")
        op = {p["name"]: p.get("valueCode", p.get("valueString", p.get("valueInteger")))
              if p["name"] != "value" else p for p in param.get("part") or ()}
        match = _PATH.match(str(op.get("path") or ""))
        if not match or match["type"] != out["resourceType"]:
            raise PatchError(f"unsupported path {op.get('path')!r}")
        kind = op.get("type")
        if kind == "add":
            if match["elem"]:
                raise PatchError("add: the path must be the resource")
            value = _value(op["value"])
            out.setdefault(str(op["name"]), []).append(value)
            continue
        elem = match["elem"]
        if not elem:
            raise PatchError("the path must name an element")
        items = out.get(elem) or []
        if kind == "insert":
            index = int(op.get("index") or 0)
            if match["field"] or index > len(items):
                raise PatchError("insert: index out of range")
            items.insert(index, _value(op["value"]))
            out[elem] = items
            continue
        hits = [i for i, item in enumerate(items) if match["field"] is None
                or str(item.get(match["field"])) == match["value"]]
        if kind == "delete":
            if len(hits) > 1:
                raise PatchError("delete: the path matches several elements")
            for i in hits:
                del items[i]
            if items:
                out[elem] = items
            else:
                out.pop(elem, None)
        elif kind == "replace":
            if len(hits) != 1:
                raise PatchError(f"replace: the path matches {len(hits)} elements")
            items[hits[0]] = _value(op["value"])
        else:
            raise PatchError(f"unsupported operation type {kind!r}")
    return out


def validate(resource: dict[str, Any]) -> None:
    """fhir.resources' R4B model of the resource type (pydantic): raises on invalid."""
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def outcome(text: str, code: str = "processing") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class FhirServer:
    def __init__(self, directory: Path, *, host: str = HOST, port: int = 0,
                 api_key: str | None = "test-esante-key", validate: bool = True) -> None:
        from trustspace.pki import generate_dev_pki

        pki = directory / "pki"
        generate_dev_pki(pki, "fhir.test", ["fhir.test"], ips=[ipaddress.ip_address(host)])
        self.ca_file = pki / "ca.crt"
        self.api_key = api_key
        self.check = validate
        self.lock = threading.Lock()
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.faults: deque[tuple[int, dict[str, str]]] = deque()
        self.log: list[tuple[str, str, int]] = []  # method, target, status
        self.keys_seen: set[str | None] = set()
        self.snapshots: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self.tokens = itertools.count(1)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "server.crt", pki / "server.key")
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, self.httpd.server_address[1]
        self.base_url = f"https://{host}:{self.port}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FhirServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ state
    def put(self, *resources: dict[str, Any]) -> None:
        for resource in resources:
            if self.check:
                validate(resource)
            with self.lock:
                self.resources[(resource["resourceType"], resource["id"])] = resource

    def get(self, kind: str, rid: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.resources[(kind, rid)])

    def touch(self, resource: dict[str, Any]) -> None:
        meta = resource.setdefault("meta", {})
        meta["versionId"] = str(int(meta.get("versionId") or "0") + 1)
        meta["lastUpdated"] = now()

    def update(self, kind: str, rid: str, change: Any) -> None:
        """Apply *change* (a function of the resource dict) as a new version."""
        with self.lock:
            resource = copy.deepcopy(self.resources[(kind, rid)])
            change(resource)
            self.touch(resource)
            if self.check:
                validate(resource)
            self.resources[(kind, rid)] = resource

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.extend([(status, headers)] * count)

    # ------------------------------------------------------------------ search
    def matches(self, kind: str, query: dict[str, list[str]]) -> list[tuple[str, str]]:
        wanted_types = {t for v in query.get("mailbox-mss-type", []) for t in v.split(",")}
        mss = [v.lower() for v in query.get("mailbox-mss", [])]
        idents = [v.split("|", 1) for v in query.get("identifier", [])]
        after = [_instant(v[2:]) for v in query.get("_lastUpdated", []) if v.startswith("gt")]
        hits = []
        with self.lock:
            for (rkind, rid), resource in self.resources.items():
                if rkind != kind:
                    continue
                telecoms = resource.get("telecom") or []
                if wanted_types and not any(metadata(t).get("type") in wanted_types
                                            for t in telecoms):
                    continue
                if mss and not any(str(t.get("value", "")).lower().startswith(m)
                                   for t in telecoms for m in mss):
                    continue
                if idents and not any(i.get("system") == s and i.get("value") == v
                                      for s, v in idents for i in resource.get("identifier")
                                      or []):
                    continue
                stamp = _instant(resource["meta"]["lastUpdated"])
                if after and not all(stamp > a for a in after):
                    continue
                hits.append((resource["meta"]["lastUpdated"], rid))
        hits.sort()
        return [(kind, rid) for _, rid in hits]

    def searchset(self, kind: str, query: dict[str, list[str]]) -> dict[str, Any]:
        count = int(query.get("_count", ["100"])[0])
        if "_token" in query:
            token = query["_token"][0]
            ids = self.snapshots.get(token)
            if ids is None:
                raise KeyError("expired")
            offset = int(query.get("_offset", ["0"])[0])
        else:
            ids, offset = self.matches(kind, query), 0
            token = str(next(self.tokens))
            self.snapshots[token] = ids
            while len(self.snapshots) > 20:
                self.snapshots.popitem(last=False)
        page = ids[offset:offset + count]
        with self.lock:
            entries = [self.resources.get(key) for key in page]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "type": "searchset", "total": len(ids),
            "link": [{"relation": "self", "url": f"{self.base_url}/{kind}"}],
            "entry": [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}",
                       "resource": r, "search": {"mode": "match"}} for r in entries if r]}
        if offset + count < len(ids):
            bundle["link"].append({"relation": "next", "url": f"{self.base_url}/{kind}?"
                                   f"_token={token}&_offset={offset + count}&_count={count}"})
        if self.check:
            validate(bundle)
        return bundle

    # ------------------------------------------------------------------ patch
    def patch(self, kind: str, rid: str | None, query: dict[str, list[str]],
              body: Any) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if rid is None:
                keys = self.matches_identifier(kind, query.get("identifier", []))
                if not keys:
                    return 404, outcome("no resource matches the identifier", "not-found")
                if len(keys) > 1:
                    return 412, outcome(f"{len(keys)} resources match the identifier",
                                        "multiple-matches")
                key = keys[0]
            else:
                key = (kind, rid)
                if key not in self.resources:
                    return 404, outcome("not found", "not-found")
            try:
                patched = apply_patch(self.resources[key], body)
                self.touch(patched)
                if self.check:
                    validate(patched)
            except (PatchError, ValueError, KeyError, TypeError) as exc:
                return 422, outcome(f"patch refused: {str(exc)[:300]}", "invalid")
            self.resources[key] = patched
            return 200, copy.deepcopy(patched)

    def matches_identifier(self, kind: str, idents: list[str]) -> list[tuple[str, str]]:
        pairs = [v.split("|", 1) for v in idents]
        return [k for k, r in self.resources.items() if k[0] == kind and pairs and all(
            any(i.get("system") == s and i.get("value") == v for i in r.get("identifier") or [])
            for s, v in pairs)]


def _handler(server: FhirServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(doc, ensure_ascii=False).encode() if doc is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            server.log.append((self.command, self.path, status))

        def _route(self) -> tuple[str, str | None, dict[str, list[str]]] | None:
            server.keys_seen.add(self.headers.get(API_KEY_HEADER))
            if server.api_key and self.headers.get(API_KEY_HEADER) != server.api_key:
                self._send(401, outcome("ESANTE-API-KEY missing or wrong", "security"))
                return None
            if server.faults:
                status, headers = server.faults.popleft()
                if status == 0:  # the connection closed without an answer
                    server.log.append((self.command, self.path, 0))
                    self.close_connection = True
                    return None
                self._send(status, outcome(f"injected {status}", "transient"), headers)
                return None
            parts = urllib.parse.urlsplit(self.path)
            segments = parts.path.strip("/").split("/")
            if segments[:1] != ["fhir"] or len(segments) not in (2, 3):
                self._send(404, outcome("unknown path", "not-found"))
                return None
            query = urllib.parse.parse_qs(parts.query)
            return segments[1], segments[2] if len(segments) == 3 else None, query

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                return
            kind, rid, query = route
            if kind == "metadata":
                self._send(200, {"resourceType": "CapabilityStatement", "status": "active",
                                 "kind": "instance", "fhirVersion": "4.0.1",
                                 "format": ["json"], "date": "2026-01-01"})
            elif rid is not None:
                try:
                    self._send(200, server.get(kind, rid))
                except KeyError:
                    self._send(404, outcome("not found", "not-found"))
            else:
                try:
                    self._send(200, server.searchset(kind, query))
                except KeyError:
                    self._send(410, outcome("paging snapshot expired", "not-found"))

        def do_PATCH(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            route = self._route()
            if route is None:
                return
            if self.headers.get("Content-Type", "").split(";")[0] != "application/fhir+json":
                self._send(415, outcome("FHIR Patch as application/fhir+json only"))
                return
            kind, rid, query = route
            try:
                doc = json.loads(body)
            except ValueError:
                self._send(400, outcome("not JSON", "structure"))
                return
            status, answer = server.patch(kind, rid, query, doc)
            self._send(status, answer)

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description="serve generated mailboxes over FHIR")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--validate", action="store_true", help="validate every Bundle (slow)")
    args = ap.parse_args()
    fhir = FhirServer(args.dir, api_key="bench-key", validate=args.validate)
    resources = generate(args.entries)
    validate(resources[0])  # the generated shapes are valid FHIR
    validate(resources[1])
    fhir.check = args.validate
    fhir.put(*resources)
    print(json.dumps({"base_url": fhir.base_url, "ca_file": str(fhir.ca_file),
                      "api_key": "bench-key"}), flush=True)
    fhir.httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
