"""The Annuaire Santé FHIR API as a directory source (directory/fhir.py) against the loopback
test API (tests/fhir_server.py: HTTPS, paged searchsets validated with fhir.resources,
429/5xx injected): full and incremental reads, backoff, TLS and API key handling."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from directory.fhir import FhirSource, mark, resource_rows, retry_after
from directory.sources import Rejected, SyncError
from mss.config import ConfigError, FhirConfig, parse_config
from tests.fhir_server import FhirServer, mailbox, organization, practitioner

PAGE = 20
PEOPLE = 70  # 4 pages of Practitioners: paging, with a snapshot per search
KEY = "test-esante-key"


def population() -> Iterator[dict[str, Any]]:
    for i in range(PEOPLE):
        telecom = [mailbox(f"pro{i}@medecin.mssante.fr")]
        if i == 3:  # a second mailbox, and emails that are not MSSanté mailboxes
            telecom += [mailbox(f"cab{i}@cabinet.mssante.fr", "CAB", service="Cardiologie"),
                        {"system": "email", "value": "perso@example.fr"},
                        {"system": "phone", "value": "0102030405"}]
        if i == 4:
            telecom = [mailbox(f"pro{i}@medecin.mssante.fr", liste_rouge=True)]
        yield practitioner(f"p{i}", f"{10_000_000_000 + i}", f"NOM{i}", f"Prénom{i}", telecom)
    gone = practitioner("p-inactive", "10099999999", "ANCIEN", "Paul",
                        [mailbox("ancien@medecin.mssante.fr")])
    gone["active"] = False
    yield gone
    for i in range(5):
        yield organization(f"o{i}", f"1{750_000_100 + i}", f"Clinique {i}", "Lyon",
                           [mailbox(f"accueil{i}@clinique.mssante.fr", "ORG")])
    yield {"resourceType": "PractitionerRole", "id": "r1",
           "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"},
           "practitioner": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                           "value": "810000000001"}, "display": "Dr Prénom1"},
           "organization": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2",
                                           "value": "1750000100"}},
           "telecom": [mailbox("pro1@clinique.mssante.fr", "APP"),
                       mailbox("pro1@medecin.mssante.fr")]}  # its Practitioner's, again


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    instance = FhirServer(tmp_path_factory.mktemp("fhir")).start()
    instance.put(*population())
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "esante.key"
    path.write_text(KEY + "\n")
    return path


def config(server: FhirServer, key_file: Path, **extra: Any) -> FhirConfig:
    values: dict[str, Any] = {"base_url": server.base_url, "api_key_file": key_file,
                              "ca_file": server.ca_file, "page_size": PAGE, "timeout": 5.0,
                              "retry_wait": 0.5, **extra}
    return FhirConfig(**values)


def read(source: FhirSource, since: str | None = None) -> tuple[dict[str, dict[str, Any]],
                                                                list[Rejected]]:
    """Run the source as directory.sync will (open, rows, close): rows by dn, rejects."""
    source.open()
    rows: dict[str, dict[str, Any]] = {}
    rejects = []
    try:
        for item in source.rows(since):
            if isinstance(item, Rejected):
                rejects.append(item)
            else:
                rows[item["dn"]] = item
    finally:
        source.close()
    return rows, rejects


def test_full_read_follows_the_pages_and_maps_the_mailboxes(server: FhirServer,
                                                            key_file: Path) -> None:
    seen: list[int] = []
    source = FhirSource(config(server, key_file), progress=seen.append)
    before = len(server.log)
    rows, rejects = read(source)
    gets = [path for method, path, status in server.log[before:] if method == "GET"]
    assert sum("/fhir/Practitioner?" in p for p in gets) == 4  # 71 matches, pages of 20
    assert all(status == 200 for _, _, status in server.log[before:])
    assert server.keys_seen == {KEY}
    mails = {r["mail"] for r in rows.values()}
    # 70 + the second mailbox of p3 + 5 ORG + 1 APP; not the inactive one, not plain emails
    assert len(rows) == 77 and not rejects
    assert "ancien@medecin.mssante.fr" not in mails and "perso@example.fr" not in mails
    alice = rows["fhir:Practitioner/p1#pro1@medecin.mssante.fr"]
    assert alice == {"dn": "fhir:Practitioner/p1#pro1@medecin.mssante.fr",
                     "mail": "pro1@medecin.mssante.fr", "type": "PER",
                     "id_nat": "810000000001", "display_name": "Prénom1 NOM1",
                     "given_name": "Prénom1", "surname": "NOM1", "profession": "Médecin",
                     "structure_id": None, "service": None, "city": None,
                     "liste_rouge": False}
    cab = rows["fhir:Practitioner/p3#cab3@cabinet.mssante.fr"]
    assert (cab["type"], cab["service"]) == ("CAB", "Cardiologie")
    assert rows["fhir:Practitioner/p4#pro4@medecin.mssante.fr"]["liste_rouge"] is True
    org = rows["fhir:Organization/o2#accueil2@clinique.mssante.fr"]
    assert (org["type"], org["structure_id"], org["id_nat"], org["display_name"],
            org["city"]) == ("ORG", "1750000102", "1750000102", "Clinique 2", "Lyon")
    role = rows["fhir:PractitionerRole/r1#pro1@clinique.mssante.fr"]
    assert (role["type"], role["id_nat"], role["structure_id"]) == \
        ("APP", "810000000001", "1750000100")
    assert "fhir:PractitionerRole/r1#pro1@medecin.mssante.fr" not in rows  # same holder
    assert source.same_holder == 1
    assert seen and seen[-1] == 77 and seen == sorted(seen)  # one call per page
    assert source.high_water(time.time()) == "2025-01-01T00:00:00Z"


def test_incremental_read_gives_what_changed_after_the_mark(server: FhirServer,
                                                            key_file: Path) -> None:
    """Full, then changes on the server, then an incremental run from the first run's
    mark: only the changed resources come back (``_lastUpdated=gt``), applied over the
    full load they give the server's new state; the new mark stays SKEW_MARGIN behind."""
    full = FhirSource(config(server, key_file))
    directory, _ = read(full)
    first_mark = full.high_water(time.time())
    assert first_mark is not None

    def add_mailbox(resource: dict[str, Any]) -> None:
        resource["telecom"].append(mailbox("nouveau@medecin.mssante.fr"))

    def red_list(resource: dict[str, Any]) -> None:
        resource["telecom"] = [mailbox("accueil0@clinique.mssante.fr", "ORG",
                                       liste_rouge=True)]

    def no_mailbox(resource: dict[str, Any]) -> None:
        resource.pop("telecom")

    def retired(resource: dict[str, Any]) -> None:
        resource["active"] = False

    server.update("Practitioner", "p10", add_mailbox)
    server.update("Organization", "o0", red_list)
    server.update("Practitioner", "p11", no_mailbox)
    server.update("Practitioner", "p12", retired)
    started = time.time()
    increment = FhirSource(config(server, key_file))
    changed, _ = read(increment, first_mark)
    assert any(f"_lastUpdated=gt{first_mark}" in path for _, path, _ in server.log[-3:])
    assert set(changed) == {"fhir:Practitioner/p10#pro10@medecin.mssante.fr",
                            "fhir:Practitioner/p10#nouveau@medecin.mssante.fr",
                            "fhir:Organization/o0#accueil0@clinique.mssante.fr"}
    # what the sync does with an increment: upsert its rows, drop the other mailboxes of
    # the resources that changed (p11 lost its mailbox, p12 is no longer active)
    assert increment.holders == {"fhir:Practitioner/p10#", "fhir:Organization/o0#",
                                 "fhir:Practitioner/p11#", "fhir:Practitioner/p12#"}
    for dn in [dn for dn in directory if dn.split("#")[0] + "#" in increment.holders
               and dn not in changed]:
        del directory[dn]
    directory.update(changed)
    assert directory["fhir:Organization/o0#accueil0@clinique.mssante.fr"]["liste_rouge"]
    assert "fhir:Practitioner/p11#pro11@medecin.mssante.fr" not in directory
    assert "fhir:Practitioner/p12#pro12@medecin.mssante.fr" not in directory
    assert len(directory) == 76
    second_mark = increment.high_water(started)
    limit = mark(dt.datetime.fromtimestamp(started - 5, dt.UTC))
    assert second_mark is not None and first_mark < second_mark <= limit
    # nothing changed since: the next increment reads nothing and keeps its mark
    quiet = FhirSource(config(server, key_file))
    again, _ = read(quiet, second_mark)
    assert set(again) <= set(changed)  # at most the changes of the last seconds, again
    assert quiet.high_water(time.time()) is not None


def test_lookup_of_one_address_with_mailbox_mss(server: FhirServer, key_file: Path) -> None:
    source = FhirSource(config(server, key_file))
    source.open()
    try:
        found = source.lookup("Pro1@medecin.mssante.fr")
        assert [r["dn"] for r in found] == ["fhir:Practitioner/p1#pro1@medecin.mssante.fr",
                                            "fhir:PractitionerRole/r1#pro1@medecin.mssante.fr"]
        assert [r["dn"] for r in source.lookup("pro1")] == []  # a prefix is not an address
        assert source.lookup("absent@medecin.mssante.fr") == []
    finally:
        source.close()


def test_429_and_5xx_are_retried_after_retry_after_then_the_run_fails(
        server: FhirServer, key_file: Path) -> None:
    waits: list[float] = []
    source = FhirSource(config(server, key_file, retries=3, resources=("Organization",)),
                        sleep=waits.append)
    server.fail_next(429, retry_after="7")
    server.fail_next(503)
    server.fail_next(0)  # a connection closed without an answer
    rows, _ = read(source)
    assert len(rows) == 5
    assert waits == [7.0, 1.0, 2.0]  # Retry-After, then retry_wait 0.5 doubled per attempt
    waits.clear()
    server.fail_next(429, retry_after="3600")  # capped by retry_max_wait
    read(FhirSource(config(server, key_file, resources=("Organization",),
                           retry_max_wait=30.0), sleep=waits.append))
    assert waits == [30.0]
    server.fail_next(503, count=4)
    waits.clear()
    with pytest.raises(SyncError, match=r"GET answered 503: injected 503"):
        read(FhirSource(config(server, key_file, retries=3, resources=("Organization",)),
                        sleep=waits.append))
    assert len(waits) == 3 and not server.faults


def test_retry_after_forms() -> None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    assert retry_after("120") == 120.0
    assert retry_after("Thu, 03 Dec 2026 12:00:30 GMT", now=1796299200.0) == 30.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_the_api_key_is_sent_to_the_api_only_and_never_shown(
        server: FhirServer, key_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-key-4242\n")
    with pytest.raises(SyncError, match="GET answered 401: ESANTE-API-KEY missing") as err:
        read(FhirSource(config(server, wrong)))
    assert "not-the-key-4242" not in str(err.value)
    monkeypatch.setenv("MSS_TEST_ESANTE_KEY", KEY)
    rows, _ = read(FhirSource(config(server, None, api_key_env="MSS_TEST_ESANTE_KEY",
                                     resources=("Organization",))))
    assert len(rows) == 5
    monkeypatch.delenv("MSS_TEST_ESANTE_KEY")
    with pytest.raises(ConfigError, match=r"directory.fhir.api_key_env: \$MSS_TEST_ESANTE_KEY"):
        FhirSource(config(server, None, api_key_env="MSS_TEST_ESANTE_KEY"))
    # a next link to another origin would carry the key there: the run stops first
    good = config(server, key_file)
    real = server.base_url
    server.base_url = real.replace("127.0.57.1", "127.0.57.2")  # what its next links say
    try:
        before = len(server.log)
        with pytest.raises(SyncError, match=r"another origin \(https://127.0.57.2\)"):
            read(FhirSource(good))
        assert len(server.log) == before + 1  # the first page, then nothing
    finally:
        server.base_url = real


def test_the_server_certificate_is_verified_before_any_request(
        server: FhirServer, key_file: Path, tmp_path: Path) -> None:
    from trustspace.pki import generate_dev_pki

    generate_dev_pki(tmp_path / "other", "other.test", ["other.test"])
    before = len(server.log)
    for ca in (tmp_path / "other" / "ca.crt", None):  # another CA; the system store
        with pytest.raises(SyncError, match="certificate not trusted"):
            FhirSource(config(server, key_file, ca_file=ca)).open()
    assert len(server.log) == before  # no request, so no API key, was sent


def test_unusable_resources_are_rejected_not_fatal() -> None:
    no_value = practitioner("px", "10000000077", "X", "Y", [mailbox("")])
    assert [str(r) for r in resource_rows(no_value)] == \
        ["Practitioner/px: an MSSanté telecom without value"]
    assert [str(r) for r in resource_rows({"resourceType": "Patient", "id": "1"})] == \
        ["Patient/1: not a Practitioner, PractitionerRole or Organization with an id"]


def test_config_section(tmp_path: Path) -> None:
    cfg = tmp_path / "mss.toml"
    ldap = {"urls": ["ldap://127.0.57.1"], "base_dn": "ou=people,dc=test"}
    parsed = parse_config({"directory": {**ldap, "fhir": {
        "base_url": "https://gateway.api.esante.gouv.fr/fhir/v2",
        "api_key_env": "MSS_ESANTE_API_KEY"}}}, cfg)
    assert parsed.directory is not None and parsed.directory.fhir is not None
    assert (parsed.directory.fhir.page_size, parsed.directory.fhir.resources) == \
        (1000, ("Practitioner", "PractitionerRole", "Organization"))
    with pytest.raises(ConfigError, match=re.escape("config: directory.fhir.base_url:")):
        parse_config({"directory": {**ldap, "fhir": {"base_url": "http://api.test"}}}, cfg)
    with pytest.raises(ConfigError, match=re.escape("config: directory.fhir.resources:")):
        parse_config({"directory": {**ldap, "fhir": {"base_url": "https://api.test",
                                                     "resources": ["Patient"]}}}, cfg)


def test_sync_through_the_cli_then_reconcile_with_the_extraction(
        server: FhirServer, key_file: Path, tmp_path: Path) -> None:
    """source = "fhir" behind DirectorySync and the real CLI: a full run, an incremental
    run that drops at once the mailbox of a resource that lost it, recipient data through
    `directory show`, then `directory reconcile` against an extraction import."""
    from tests import extraction_data
    from tests.node import make_node

    node = make_node(tmp_path / "mss")
    node.config.write_text(node.config.read_text() + f"""
[directory]
source = "fhir"
interval = 0

[directory.fhir]
base_url = "{server.base_url}"
api_key_file = "{key_file}"
ca_file = "{server.ca_file}"
page_size = {PAGE}
retry_wait = 0.5
""")
    full = node.cli("directory", "sync", "--full").stdout
    entries = int(re.search(r"\(fhir\): (\d+) entries, \1 added", full).group(1))  # type: ignore[union-attr]
    assert entries > 70 and node.cli_json("directory", "status")["entries"] == entries
    assert node.cli_json("directory", "show", "pro20@medecin.mssante.fr")["sources"] == ["fhir"]

    def lost_mailbox(resource: dict[str, Any]) -> None:
        resource["telecom"] = [mailbox("pro20.bis@medecin.mssante.fr")]  # pro20 gone

    server.update("Practitioner", "p20", lost_mailbox)
    time.sleep(1.1)  # the mark is per second: the change after the full run's mark
    increment = node.cli("directory", "sync").stdout
    assert "incremental" in increment and ", 1 removed" in increment, increment
    assert node.cli("directory", "show", "pro20@medecin.mssante.fr",
                    check=False).returncode != 0
    assert node.cli_json("directory", "status")["entries"] == entries  # -1 +1 (pro20.bis)
    zipped = tmp_path / "extraction.zip"
    extraction_data.write_zip(zipped, extraction_data.lines(5))
    node.cli("directory", "import", str(zipped))
    found = node.cli_json("directory", "reconcile", "fhir", "extraction")
    assert (found["only_left"], found["only_right"]) == (entries, 5)
