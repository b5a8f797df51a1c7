"""'mss directory publish --fhir': our mailboxes into the national directory over FHIR Patch,
through the real CLI, against the loopback FHIR API (tests/fhir_server.py applies each
Patch and validates the patched resource with fhir.resources), read back through the same
API with directory.fhir.FhirSource."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from directory.fhir import FhirSource, metadata
from directory.sources import Rejected
from mss import db
from mss.config import FhirConfig
from tests.fhir_server import FhirServer, mailbox, organization, practitioner
from tests.node import DOMAIN, Node, make_node

KEY = "publish-esante-key-5150"
OTHER = "alice.martin@autre-operateur.mssante.fr"  # another operator's, on the same person


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    instance = FhirServer(tmp_path_factory.mktemp("fhir"), api_key=KEY).start()
    alice = practitioner("pa", "10000000001", "MARTIN", "Alice", [mailbox(OTHER)])
    alice["telecom"].append({"system": "phone", "value": "0102030405"})
    instance.put(alice,
                 practitioner("pb1", "10000000002", "DURAND", "Bob", []),
                 practitioner("pb2", "10000000002", "DURAND", "Bob", []),  # 412 for bob
                 organization("os", "1750000001", "Centre de santé", "Paris", []))
    yield instance  # carol (RPPS 10000000003) has no Practitioner: 404
    instance.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, server: FhirServer) -> Node:
    base = tmp_path_factory.mktemp("mss")
    instance = make_node(base, with_whitelist=False)
    instance.cli("mailbox", "add", f"carol@{DOMAIN}", "--type", "PER", "--rpps",
                 "10000000003", "--no-password")
    key = instance.data_dir / "keys" / "esante.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    instance.config.write_text(instance.config.read_text() + f"""
[directory]
urls = ["ldap://127.0.57.1:1"]
base_dn = "ou=people,dc=unused"
interval = 0

[directory.fhir]
base_url = "{server.base_url}"
api_key_file = "keys/esante.key"
ca_file = "{server.ca_file}"
retry_wait = 0
""")
    return instance


def patches(server: FhirServer) -> list[tuple[str, int]]:
    return [(path, status) for method, path, status in server.log if method == "PATCH"]


def read_back(server: FhirServer) -> dict[str, dict[str, Any]]:
    """The national directory's mailboxes as another operator's sync sees them."""
    source = FhirSource(FhirConfig(base_url=server.base_url, ca_file=server.ca_file,
                                   api_key_env="MSS_TEST_PUBLISH_KEY",
                                   resources=("Practitioner", "Organization")))
    source.open()
    try:
        rows = [r for r in source.rows(None) if not isinstance(r, Rejected)]
    finally:
        source.close()
    return {r["mail"]: r for r in rows}


def set_mailbox(node: Node, address: str, **values: Any) -> None:
    engine = db.make_engine(f"sqlite:///{node.data_dir / 'mss.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(update(db.mailboxes).where(db.mailboxes.c.address == address)
                         .values(**values))
    finally:
        engine.dispose()


def test_dry_run_prints_the_patch_documents_and_sends_nothing(node: Node,
                                                              server: FhirServer) -> None:
    before = len(server.log)
    out = node.cli("directory", "publish", "--fhir", "--dry-run").stdout
    assert len(server.log) == before  # not even a read
    assert (f"PATCH {server.base_url}/Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|"
            "810000000001") in out
    assert f"PATCH {server.base_url}/Organization?identifier=urn:oid:1.2.250.1.71.4.2.2|" \
        "1750000001" in out
    assert '"valueCode": "add"' in out and f'"value": "alice@{DOMAIN}"' in out
    assert out.rstrip().endswith("dry run: 4 PATCH calls, 0 unchanged")


def test_publication_round_trip(node: Node, server: FhirServer,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSS_TEST_PUBLISH_KEY", KEY)
    first = node.cli("directory", "publish", "--fhir", check=False)
    # 412 (two Practitioners for bob) and 404 (none for carol) reported, the run goes on
    assert first.returncode == 1, first.stderr
    assert "published over FHIR: 4 calls (2 add), 2 refused, 0 unchanged" in first.stdout
    assert f"bob@{DOMAIN}: add refused, 412: 2 resources match the identifier" in first.stderr
    assert f"carol@{DOMAIN}: add refused, 404: no resource matches" in first.stderr
    assert KEY not in first.stdout + first.stderr
    events = {r["mailbox"]: r for r in node.audit() if r["event"] == "directory.publish"}
    assert {m: r["outcome"] for m, r in events.items()} == {
        f"alice@{DOMAIN}": 0, f"secretariat@{DOMAIN}": 0, f"bob@{DOMAIN}": 4,
        f"carol@{DOMAIN}": 4}
    directory = read_back(server)
    alice = directory[f"alice@{DOMAIN}"]
    assert (alice["dn"], alice["type"], alice["id_nat"], alice["liste_rouge"]) == \
        (f"fhir:Practitioner/pa#alice@{DOMAIN}", "PER", "810000000001", False)
    assert directory[f"secretariat@{DOMAIN}"]["dn"].startswith("fhir:Organization/os#")
    assert OTHER in directory  # the other operator's mailbox and the phone are kept
    assert {"system": "phone", "value": "0102030405"} in server.get("Practitioner",
                                                                   "pa")["telecom"]

    # the directory fixed (one Practitioner for bob, one for carol), a 429 on the way
    with server.lock:
        del server.resources[("Practitioner", "pb2")]
    server.put(practitioner("pc", "10000000003", "PETIT", "Carol", []))
    server.fail_next(429, retry_after="0")
    server.fail_next(0)  # then the connection closed unanswered: the Patch is idempotent
    second = node.cli("directory", "publish", "--fhir").stdout
    assert "2 calls (2 add), 0 refused, 2 unchanged" in second
    assert [status for _, status in patches(server)[-4:]] == [429, 0, 200, 200]
    sent = len(patches(server))
    third = node.cli("directory", "publish", "--fhir").stdout
    assert "0 calls (none), 0 refused, 4 unchanged" in third
    assert len(patches(server)) == sent  # idempotent: nothing sent

    # liste rouge set, a type changed, a mailbox disabled
    set_mailbox(node, f"alice@{DOMAIN}", liste_rouge=True)
    set_mailbox(node, f"secretariat@{DOMAIN}", type="APP")
    node.cli("mailbox", "disable", f"bob@{DOMAIN}")
    version = server.get("Organization", "os")["meta"]["versionId"]
    fourth = node.cli("directory", "publish", "--fhir").stdout
    assert "3 calls (1 delete, 1 replace, 1 retype), 0 refused, 1 unchanged" in fourth
    directory = read_back(server)
    assert directory[f"alice@{DOMAIN}"]["liste_rouge"] is True
    assert directory[f"secretariat@{DOMAIN}"]["type"] == "APP"
    assert f"bob@{DOMAIN}" not in directory and f"carol@{DOMAIN}" in directory
    org = server.get("Organization", "os")
    assert int(org["meta"]["versionId"]) == int(version) + 1  # delete + add: one Patch
    assert [metadata(t)["type"] for t in org["telecom"]] == ["APP"]
    retype = [r for r in node.audit() if r["event"] == "directory.publish"
              and r["mailbox"] == f"secretariat@{DOMAIN}"][-1]
    assert retype["outcome"] == 0
    assert "0 calls (none)" in node.cli("directory", "publish", "--fhir").stdout

    # the API failing past the retries (5 by default): the run stops, audited, and the
    # next run sends what was not done
    set_mailbox(node, f"alice@{DOMAIN}", liste_rouge=False)
    server.fail_next(503, count=6)
    down = node.cli("directory", "publish", "--fhir", check=False)
    assert down.returncode == 2
    assert f"publication stopped after 1 calls: {server.base_url} answered 503: injected " \
        f"503 after 5 retries (alice@{DOMAIN}: replace)" in down.stderr
    last = [r for r in node.audit() if r["event"] == "directory.publish"][-1]
    assert last["outcome"] == 8 and "503" in str(last["reason"])
    assert "1 calls (1 replace)" in node.cli("directory", "publish", "--fhir").stdout


def test_publish_without_a_fhir_section_is_a_one_line_error(tmp_path: Path) -> None:
    bare = make_node(tmp_path, with_whitelist=False)
    proc = bare.cli("directory", "publish", "--fhir", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("no [directory.fhir] section in the configuration")


class _Box:
    def __init__(self, address: str, type: str = "PER", rpps: str | None = "10000000001",
                 finess: str | None = None, liste_rouge: bool = False) -> None:
        self.address, self.type, self.rpps, self.finess = address, type, rpps, finess
        self.enabled, self.liste_rouge, self.delete_after = True, liste_rouge, None


def test_plan_moves_a_mailbox_whose_holder_changed_and_honours_omit() -> None:
    """Pure planning: a new RPPS is a delete at the old Practitioner then an add at the new
    one; liste_rouge = "omit" unpublishes; a PER mailbox without RPPS is reported."""
    from directory.fhir_publish import plan, wanted

    before, _ = wanted([_Box("a@x.fr")])
    w = before["a@x.fr"]
    published = {"a@x.fr": {"resource_type": w.resource_type, "identifier": w.identifier,
                            "mailbox_type": w.kind, "digest": w.digest}}
    after, _ = wanted([_Box("a@x.fr", rpps="10000000009")])
    calls = plan(after, published)
    assert [(c.action, c.identifier) for c in calls] == [
        ("move-out", "urn:oid:1.2.250.1.71.4.2.1|810000000001"),
        ("move-in", "urn:oid:1.2.250.1.71.4.2.1|810000000009")]
    hidden, _ = wanted([_Box("a@x.fr", liste_rouge=True)], "omit")
    assert [c.action for c in plan(hidden, published)] == ["delete"]
    flagged, _ = wanted([_Box("a@x.fr", liste_rouge=True)])
    assert [c.action for c in plan(flagged, published)] == ["replace"]
    assert plan(before, published) == []
    _, skipped = wanted([_Box("b@x.fr", rpps=None), _Box("c@x.fr", "ORG", rpps=None)])
    assert skipped == ["b@x.fr: type PER without RPPS", "c@x.fr: type ORG without FINESS"]
