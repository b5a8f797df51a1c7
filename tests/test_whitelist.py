"""The national whitelist: parser, index, and versioned import with its shrink guard."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from audit.events import Outcome
from mss import db
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.registry import (
    WhitelistImportError,
    active_version_id,
    import_whitelist,
    list_versions,
    load_active,
)
from trustspace.whitelist import (
    Whitelist,
    WhitelistFormatError,
    normalize_domain,
    parse_whitelist,
)

REAL_LIST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "liste-blanche"
             / "listeblanchemssante-2025-03-14.xml")
HOPITAL_ACE = "hôpital".encode("idna").decode()  # xn--... (RFC 3492 Punycode)
CLINIQUE_ACE = "cliniqué.fr".encode("idna").decode()
DN = "CN=mx.op.fr,OU=312345678,O=Op,ST=Paris (75),C=FR"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = db.make_engine(f"sqlite:///{tmp_path}/wl.db")
    db.create_schema(engine)
    return engine


def audit_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(db.audit_log).where(db.audit_log.c.event == "whitelist.import"))]


# --------------------------------------------------------------------------- parser

@pytest.mark.skipif(not REAL_LIST.exists(), reason="national whitelist not available")
def test_real_list_counts_and_truncation(engine: Engine) -> None:
    data = REAL_LIST.read_bytes()
    t0 = time.perf_counter()
    parsed = parse_whitelist(data)
    assert len(parsed.entries) == 6554
    assert len(parsed.domains) == 5002
    assert parsed.truncated
    assert parsed.warnings[0].startswith("document truncated after 6554 complete Domaine")
    assert parsed.generated_at == "2025-03-13T14:54:10Z"
    result = import_whitelist(engine, data, str(REAL_LIST))
    assert (result.entries, result.domains) == (6554, 5002)
    assert time.perf_counter() - t0 < 5
    with engine.connect() as conn:
        wl = load_active(conn)
    assert wl.domain_count == 5002 and wl.entry_count == 6554
    zenidoc = wl.dns_for("zenidoc.mssante.fr")  # one entry per operator DN: four here
    assert len(zenidoc) == 4 and any(dn.startswith("CN=smtp-2.mssante.adista.fr") for dn in zenidoc)
    # a list that shrinks by half is refused, the real one stays in force
    half = make_whitelist_xml([(d, DN) for d in sorted(parsed.domains)[:2501]])
    with pytest.raises(WhitelistImportError, match="use --force"):
        import_whitelist(engine, half, "half.xml")
    with engine.connect() as conn:
        assert active_version_id(conn) == result.version_id
    forced = import_whitelist(engine, half, "half.xml", force=True)
    assert forced.domains == 2501 and forced.previous_domains == 5002


def test_matching_is_case_insensitive_and_idna() -> None:
    parsed = parse_whitelist(make_whitelist_xml([
        ("Zenidoc.MSSante.fr", DN), ("hôpital.mssante.fr", DN), (CLINIQUE_ACE, DN)]))
    wl = Whitelist(1, parsed.entries)
    assert wl.is_whitelisted("ZENIDOC.mssante.FR.")
    assert wl.is_whitelisted("HÔPITAL.mssante.fr")
    assert wl.is_whitelisted(f"{HOPITAL_ACE}.mssante.fr")
    assert wl.is_whitelisted("cliniqué.fr")
    assert not wl.is_whitelisted("mssante.fr")
    assert not wl.is_whitelisted("")
    assert not wl.is_whitelisted("a..b")
    assert wl.dns_for("zenidoc.mssante.fr") == frozenset({DN})
    assert not Whitelist.empty().is_whitelisted("zenidoc.mssante.fr")


def test_normalize_domain() -> None:
    assert normalize_domain(" Example.FR. ") == "example.fr"
    assert normalize_domain("hôpital.fr") == f"{HOPITAL_ACE}.fr"
    for bad in ("", ".", "a..b", "-a.fr", "a" * 64 + ".fr", "a b.fr", "x@y.fr"):
        with pytest.raises(ValueError):
            normalize_domain(bad)


def test_format_errors() -> None:
    with pytest.raises(WhitelistFormatError, match="DOCTYPE"):
        parse_whitelist(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')
    with pytest.raises(WhitelistFormatError, match="root element"):
        parse_whitelist(b"<html><body/></html>")
    with pytest.raises(WhitelistFormatError, match="namespace"):
        parse_whitelist(b'<ListeBlancheMSSante xmlns="urn:other"/>')
    with pytest.raises(WhitelistFormatError, match="no usable"):
        parse_whitelist(make_whitelist_xml([]))
    with pytest.raises(WhitelistFormatError):
        parse_whitelist(b"")


def test_incomplete_entries_skipped_with_warning() -> None:
    data = make_whitelist_xml([("ok.mssante.fr", DN), ("", DN), ("nodn.mssante.fr", "")])
    parsed = parse_whitelist(data)
    assert [e.domain for e in parsed.entries] == ["ok.mssante.fr"]
    assert any("no Nom" in w for w in parsed.warnings)
    assert any("nodn.mssante.fr: no DNCertificatOperateur" in w for w in parsed.warnings)
    assert not parsed.truncated


def test_truncated_mid_entry_keeps_complete_ones() -> None:
    data = make_whitelist_xml([("a.mssante.fr", DN), ("b.mssante.fr", DN)], truncated=True)
    cut = data + b"\n        <Domaine>\n            <Nom>c.mssante"
    parsed = parse_whitelist(cut)
    assert sorted(parsed.domains) == ["a.mssante.fr", "b.mssante.fr"] and parsed.truncated


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parser_never_crashes_on_bytes(data: bytes) -> None:
    with contextlib.suppress(WhitelistFormatError):
        parse_whitelist(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_crashes_on_text_in_a_domain(name: str) -> None:
    from xml.sax.saxutils import escape

    valid = "".join(c for c in name if c.isprintable())
    data = make_whitelist_xml([("good.mssante.fr", DN)]).replace(
        b"good.mssante.fr", escape(valid).encode("utf-8"), 2)
    with contextlib.suppress(WhitelistFormatError):
        parse_whitelist(data)


# --------------------------------------------------------------------------- registry

def test_import_versions_and_audit(engine: Engine) -> None:
    first = import_whitelist(engine, make_whitelist_xml([("a.fr", DN), ("b.fr", DN)]), "v1")
    again = import_whitelist(engine, make_whitelist_xml([("a.fr", DN), ("b.fr", DN)]), "v1")
    assert again.unchanged and again.version_id == first.version_id
    second = import_whitelist(engine, make_whitelist_xml(
        [("a.fr", DN), ("b.fr", DN), ("c.fr", DN)]), "v2")
    assert second.version_id != first.version_id
    with engine.connect() as conn:
        versions = list_versions(conn)
        assert [v["active"] for v in versions] == [True, False]
        assert load_active(conn).is_whitelisted("c.fr")
    with pytest.raises(WhitelistImportError):
        import_whitelist(engine, b"<ListeBlancheMSSante", "broken")
    with engine.connect() as conn:
        assert active_version_id(conn) == second.version_id
    outcomes = [(r["outcome"], r["whitelist_version"]) for r in audit_rows(engine)]
    assert outcomes == [(0, first.version_id), (0, first.version_id), (0, second.version_id),
                        (int(Outcome.SERIOUS_FAILURE), second.version_id)]


def test_shrink_guard_ratio(engine: Engine) -> None:
    domains = [(f"d{i}.fr", DN) for i in range(100)]
    import_whitelist(engine, make_whitelist_xml(domains), "full")
    # dropping 10 of 100 is allowed, 11 more (21 of 100 from the 90) is not
    assert import_whitelist(engine, make_whitelist_xml(domains[:90]), "90").domains == 90
    with pytest.raises(WhitelistImportError, match="drops 11 of 90"):
        import_whitelist(engine, make_whitelist_xml(domains[:79]), "79")
    refused = audit_rows(engine)[-1]
    assert refused["outcome"] == int(Outcome.MINOR_FAILURE)
    assert "drops 11 of 90" in str(refused["reason"])



def test_dn_comparison_ignores_order_spacing_and_case() -> None:
    from trustspace.dn import DNError, parse_dn

    a = parse_dn("CN=smtp-1.mssante.adista.fr,OU=332315971500305,O=ADISTA,"
                 "ST=Meurthe-et-Moselle (54),C=FR")
    b = parse_dn("c=fr, st=meurthe-et-moselle  (54) , o=Adista,ou=332315971500305,"
                 "cn=SMTP-1.mssante.adista.fr")
    assert a == b
    assert parse_dn("S=Paris,2.5.4.3=x") == parse_dn("ST=paris,CN=X")
    assert parse_dn(r"O=A\, B,CN=x") == parse_dn("CN=x,O=a\\2C b")
    assert a != parse_dn("CN=smtp-2.mssante.adista.fr,OU=332315971500305,O=ADISTA,C=FR")
    for bad in ("", "CN", "CN=x,,O=y", "CN=x\\"):
        with pytest.raises(DNError):
            parse_dn(bad)


@pytest.mark.skipif(not REAL_LIST.exists(), reason="national whitelist not available")
def test_every_real_dn_parses_and_variants_collapse() -> None:
    from trustspace.dn import parse_dn

    parsed = parse_whitelist(REAL_LIST.read_bytes())
    texts = {e.dn for e in parsed.entries}
    canonical = {parse_dn(t) for t in texts}
    assert len(texts) == 392 and len(canonical) == 391  # one DN published in two spellings
    wl = Whitelist(1, parsed.entries)
    dn = parse_dn("C=FR,ST=Meurthe-et-Moselle (54),O=ADISTA,OU=332315971500305,"
                  "CN=smtp-2.mssante.adista.fr")
    assert wl.dn_listed("zenidoc.mssante.fr", dn)
    assert not wl.dn_listed("adsea29.mssante.fr", dn)
