"""The national whitelist: parser, index, and versioned import with its shrink guard."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from audit.events import Outcome
from mss import db
from mss.addresses import normalize_domain
from tests.node import BACKENDS
from tests.peers import require_file
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.registry import (
    WhitelistImportError,
    active_version_id,
    active_version_info,
    import_whitelist,
    list_versions,
    load_active,
)
from trustspace.whitelist import (
    Whitelist,
    WhitelistFormatError,
    parse_whitelist,
)

REAL_LIST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "liste-blanche"
             / "listeblanchemssante-2025-03-14.xml")
HOPITAL_ACE = "hôpital".encode("idna").decode()  # xn--... (RFC 3492 Punycode)
CLINIQUE_ACE = "cliniqué.fr".encode("idna").decode()
DN = "CN=mx.op.fr,OU=312345678,O=Op,ST=Paris (75),C=FR"
DOCTYPE_BOMB = ('<?xml version="1.0"?><!DOCTYPE ListeBlancheMSSante [<!ENTITY a "aaaa">'
                '<!ENTITY b "&a;&a;&a;&a;">]><ListeBlancheMSSante><ListeDomaines><Domaine>'
                '<Nom>&b;.fr</Nom><DNCertificatOperateur>CN=x</DNCertificatOperateur>'
                '</Domaine></ListeDomaines></ListeBlancheMSSante>')


# the registry (import, versions, shrink guard) on both backends: the tests taking
# ``engine``; the parser and DN tests need no database
BACKENDS = BACKENDS


@pytest.fixture
def engine(db_engine: Engine) -> Engine:
    return db_engine


def audit_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(db.audit_log).where(db.audit_log.c.event == "whitelist.import")
            .order_by(db.audit_log.c.id))]


def version_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(list_versions(conn))


# --------------------------------------------------------------------------- parser

def test_real_list_counts_and_truncation(engine: Engine) -> None:
    require_file(REAL_LIST, source="../shared/data (the national whitelist)")
    data = REAL_LIST.read_bytes()
    t0 = time.perf_counter()
    parsed = parse_whitelist(data)
    assert len(parsed.entries) == 6554
    assert len(parsed.domains) == 5002
    assert parsed.truncated
    assert parsed.warnings[0] == ("document truncated after 6554 complete Domaine entries "
                                  "(missing closing tags)")
    assert parsed.generated_at == "2025-03-13T14:54:10Z"
    result = import_whitelist(engine, data, str(REAL_LIST))
    assert (result.entries, result.domains, result.previous_domains) == (6554, 5002, 0)
    assert time.perf_counter() - t0 < 5  # about 0.2 s on a laptop
    with engine.connect() as conn:
        wl = load_active(conn)
    assert wl.domain_count == 5002 and wl.entry_count == 6554
    assert wl.version_id == result.version_id
    zenidoc = wl.dns_for("zenidoc.mssante.fr")  # one entry per operator DN: four here
    assert len(zenidoc) == 4 and any(dn.startswith("CN=smtp-2.mssante.adista.fr") for dn in zenidoc)
    assert wl.is_whitelisted("ZENIDOC.mssante.FR.")
    # the list publishes 'sessad@ase.ditepbeziers.mssante.fr': kept, warned, never matched
    assert any("sessad@ase.ditepbeziers.mssante.fr" in w for w in parsed.warnings)
    assert not wl.is_whitelisted("sessad@ase.ditepbeziers.mssante.fr")
    # a list that keeps half of the domains is refused, the real one stays in force
    half = make_whitelist_xml([(d, DN) for d in sorted(parsed.domains)[:2501]])
    with pytest.raises(WhitelistImportError, match=r"drops 2501 of 5002 domains \(50\.0% > "
                                                   r"10%\); use --force"):
        import_whitelist(engine, half, "half.xml")
    with engine.connect() as conn:
        assert active_version_id(conn) == result.version_id
        assert load_active(conn).domain_count == 5002
    assert version_count(engine) == 1
    refused = audit_rows(engine)[-1]
    assert refused["outcome"] == int(Outcome.MINOR_FAILURE)
    assert refused["whitelist_version"] == result.version_id
    assert "drops 2501 of 5002" in str(refused["reason"])
    forced = import_whitelist(engine, half, "half.xml", force=True)
    assert forced.domains == 2501 and forced.previous_domains == 5002
    with engine.connect() as conn:
        assert active_version_id(conn) == forced.version_id
    done = audit_rows(engine)[-1]
    assert done["outcome"] == 0 and done["whitelist_version"] == forced.version_id
    assert json.loads(str(done["detail"]))["forced"] is True


def test_matching_is_case_insensitive_and_idna() -> None:
    parsed = parse_whitelist(make_whitelist_xml([
        ("Zenidoc.MSSante.fr", DN), ("hôpital.mssante.fr", DN), (CLINIQUE_ACE, DN)]))
    wl = Whitelist(1, parsed.entries)
    assert wl.is_whitelisted("ZENIDOC.mssante.FR.")
    assert wl.is_whitelisted(" zenidoc.mssante.fr ")
    assert wl.is_whitelisted("HÔPITAL.mssante.fr")
    assert wl.is_whitelisted(f"{HOPITAL_ACE}.mssante.fr")
    assert wl.is_whitelisted(f"{HOPITAL_ACE.upper()}.MSSANTE.FR")
    assert wl.is_whitelisted("cliniqué.fr")
    assert wl.is_whitelisted("cliniqué。fr")  # ideographic full stop (RFC 3490 §3.1)
    assert not wl.is_whitelisted("mssante.fr")
    assert not wl.is_whitelisted("x.zenidoc.mssante.fr")  # no implicit subdomains
    assert not wl.is_whitelisted("")
    assert not wl.is_whitelisted("a..b")
    assert wl.dns_for("zenidoc.mssante.fr") == frozenset({DN})
    assert wl.dns_for(f"{HOPITAL_ACE}.mssante.fr.") == frozenset({DN})
    assert wl.dns_for("nope.fr") == frozenset() and wl.dns_for("..") == frozenset()
    assert (wl.version_id, wl.domain_count, wl.entry_count) == (1, 3, 3)
    empty = Whitelist.empty()
    assert empty.version_id == 0 and empty.domain_count == 0
    assert not empty.is_whitelisted("zenidoc.mssante.fr")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_lookup_never_raises(name: str) -> None:
    wl = Whitelist(1, parse_whitelist(make_whitelist_xml([("a.fr", DN)])).entries)
    assert isinstance(wl.is_whitelisted(name), bool)
    assert isinstance(wl.dns_for(name), frozenset)
    with contextlib.suppress(ValueError):
        normalized = normalize_domain(name)
        assert normalize_domain(normalized) == normalized  # idempotent, always ASCII
        assert normalized.isascii() and normalized == normalized.lower()


def test_normalize_domain() -> None:
    assert normalize_domain(" Example.FR. ") == "example.fr"
    assert normalize_domain("hôpital.fr") == f"{HOPITAL_ACE}.fr"
    assert normalize_domain(f"{HOPITAL_ACE.upper()}.fr") == f"{HOPITAL_ACE}.fr"
    assert normalize_domain("a" * 63 + ".fr") == "a" * 63 + ".fr"
    for bad in ("", ".", " . ", "a..b", ".a.fr", "a.fr..", "-a.fr", "a-.fr", "a" * 64 + ".fr",
                ".".join(["a" * 60] * 5), "a b.fr", "x@y.fr", "a_b.fr", "a\x00.fr"):
        with pytest.raises(ValueError):
            normalize_domain(bad)
    with pytest.raises(ValueError, match="longer than 63"):
        normalize_domain("a" * 64 + ".fr")
    with pytest.raises(ValueError, match="253"):
        normalize_domain(".".join(["a" * 60] * 5))


def test_format_errors() -> None:
    with pytest.raises(WhitelistFormatError, match="DOCTYPE not allowed"):
        parse_whitelist(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')
    with pytest.raises(WhitelistFormatError, match="DOCTYPE not allowed"):
        parse_whitelist(DOCTYPE_BOMB.encode())
    # a DOCTYPE far from the start, or an external DTD, is refused as well
    with pytest.raises(WhitelistFormatError, match="DOCTYPE not allowed"):
        parse_whitelist(b"<?xml version='1.0'?><!--" + b"x" * 10_000 + b'--><!DOCTYPE x '
                        b'SYSTEM "http://example.invalid/x.dtd"><x/>')
    # UTF-16 would hide a DOCTYPE from a byte scan: refused altogether
    with pytest.raises(WhitelistFormatError, match="UTF-16"):
        parse_whitelist(DOCTYPE_BOMB.replace('"1.0"', '"1.0" encoding="UTF-16"')
                        .encode("utf-16"))
    with pytest.raises(WhitelistFormatError, match="root element"):
        parse_whitelist(b"<html><body/></html>")
    with pytest.raises(WhitelistFormatError, match="namespace"):
        parse_whitelist(b'<ListeBlancheMSSante xmlns="urn:other"/>')
    with pytest.raises(WhitelistFormatError, match="namespace"):
        parse_whitelist(make_whitelist_xml([("a.fr", DN)], namespace="urn:other"))
    with pytest.raises(WhitelistFormatError, match="no usable"):
        parse_whitelist(make_whitelist_xml([]))
    with pytest.raises(WhitelistFormatError, match="no usable"):
        parse_whitelist(make_whitelist_xml([("", DN), ("nodn.fr", "")]))
    with pytest.raises(WhitelistFormatError, match="not well-formed"):
        parse_whitelist(b"")
    with pytest.raises(WhitelistFormatError, match="not well-formed"):
        parse_whitelist(b"\xff\xfe\xfd garbage")
    with pytest.raises(WhitelistFormatError):  # broken before the first complete entry
        parse_whitelist(make_whitelist_xml([("a.fr", DN)]).replace(b"</Domaine>", b"</D>"))


def test_without_namespace_and_unknown_elements() -> None:
    data = make_whitelist_xml([("a.fr", DN), ("b.fr", DN)], namespace=None)
    parsed = parse_whitelist(data)
    assert parsed.domains == {"a.fr", "b.fr"} and not parsed.truncated and not parsed.warnings
    assert parsed.generated_at == "2025-03-13T14:54:10Z"
    entry = parsed.entries[0]
    assert (entry.dn, entry.description, entry.updated_at) == (DN, "Test a.fr",
                                                               "2025-03-13T14:54:10Z")
    assert entry.responsable_contact.endswith("resp@example.fr")
    assert entry.support_contact.endswith("support@example.fr")
    # a Domaine outside ListeDomaines, or extra elements, are not entries
    extra = data.replace(b"<ListeDomaines>", b"<Autre><Domaine><Nom>evil.fr</Nom>"
                         b"<DNCertificatOperateur>CN=e</DNCertificatOperateur></Domaine></Autre>"
                         b"<ListeDomaines><Extension>x</Extension>")
    assert parse_whitelist(extra).domains == {"a.fr", "b.fr"}


def test_incomplete_entries_skipped_with_warning() -> None:
    data = make_whitelist_xml([("ok.mssante.fr", DN), ("", DN), ("nodn.mssante.fr", ""),
                               ("gone.mssante.fr", DN)])
    # a Domaine with no Nom element at all
    data = data.replace(b"<Nom>gone.mssante.fr</Nom>", b"")
    parsed = parse_whitelist(data)
    assert [e.domain for e in parsed.entries] == ["ok.mssante.fr"]
    assert "Domaine #2 skipped: no Nom" in parsed.warnings
    assert "Domaine #3 skipped: nodn.mssante.fr: no DNCertificatOperateur" in parsed.warnings
    assert "Domaine #4 skipped: no Nom" in parsed.warnings
    assert not parsed.truncated


def test_invalid_names_kept_unmatchable_or_skipped() -> None:
    long_name = "x" * 300 + ".fr"
    parsed = parse_whitelist(make_whitelist_xml([
        ("ok.fr", DN), ("a@b.fr", DN), (long_name, DN)]))
    assert parsed.domains == {"ok.fr", "a@b.fr"}  # kept as published (like the real list)
    assert any("'a@b.fr'" in w and "matches no address" in w for w in parsed.warnings)
    assert any("Domaine #3 skipped: invalid domain name" in w for w in parsed.warnings)
    wl = Whitelist(1, parsed.entries)
    assert not wl.is_whitelisted("a@b.fr") and not wl.is_whitelisted("b.fr")
    assert wl.dns_for("a@b.fr") == frozenset()


def test_entry_warnings_are_capped() -> None:
    parsed = parse_whitelist(make_whitelist_xml(
        [("ok.fr", DN)] + [(f"n{i}.fr", "") for i in range(50)]))
    assert len(parsed.entries) == 1
    assert len(parsed.warnings) == 21
    assert parsed.warnings[-1].startswith("30 more entry warnings (50 Domaine entries skipped")


def test_truncated_mid_entry_keeps_complete_ones() -> None:
    data = make_whitelist_xml([("a.mssante.fr", DN), ("b.mssante.fr", DN)], truncated=True)
    cut = data + b"\n        <Domaine>\n            <Nom>c.mssante"
    parsed = parse_whitelist(cut)
    assert sorted(parsed.domains) == ["a.mssante.fr", "b.mssante.fr"] and parsed.truncated
    assert parsed.warnings == ["document truncated after 2 complete Domaine entries "
                               "(missing closing tags)"]
    # any other XML error after complete entries is reported as a truncation too
    broken = data + b"\n<Domaine><Nom>c.fr</Nom></Domain>" + make_whitelist_xml([("d.fr", DN)])
    parsed = parse_whitelist(broken)
    assert parsed.domains == {"a.mssante.fr", "b.mssante.fr"} and parsed.truncated
    assert parsed.warnings[0].startswith("document truncated after 2 complete Domaine entries "
                                         "(mismatched tag")


def test_large_list_streams() -> None:
    domains = [(f"d{i}.mssante.fr", f"CN=mx{i % 50}.op.fr,O=Op,C=FR") for i in range(20_000)]
    parsed = parse_whitelist(make_whitelist_xml(domains))  # several 64 KiB chunks
    assert len(parsed.entries) == 20_000 and len(parsed.domains) == 20_000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parser_never_crashes_on_bytes(data: bytes) -> None:
    with contextlib.suppress(WhitelistFormatError):
        parse_whitelist(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_parser_on_cut_or_damaged_documents(data: st.DataObject) -> None:
    names = [f"d{i}.fr" for i in range(5)]
    doc = make_whitelist_xml([(n, DN) for n in names])
    flip = data.draw(st.booleans())
    if flip:  # one byte changed anywhere
        at = data.draw(st.integers(0, len(doc) - 1))
        damaged = doc[:at] + bytes([data.draw(st.integers(0, 255))]) + doc[at + 1:]
    else:  # cut anywhere
        damaged = doc[:data.draw(st.integers(0, len(doc)))]
    try:
        parsed = parse_whitelist(damaged)
    except WhitelistFormatError:
        return
    assert 1 <= len(parsed.entries) <= 5
    if not flip:  # a cut keeps exactly the complete entries, in order
        assert [e.domain for e in parsed.entries] == names[:len(parsed.entries)]
        assert parsed.truncated == (damaged.rstrip() != doc.rstrip())


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_crashes_on_text_in_a_domain(name: str) -> None:
    valid = "".join(c for c in name if c.isprintable())
    data = make_whitelist_xml([("good.mssante.fr", DN)]).replace(
        b"good.mssante.fr", escape(valid).encode("utf-8"), 2)
    with contextlib.suppress(WhitelistFormatError):
        parse_whitelist(data)


# --------------------------------------------------------------------------- registry

def test_import_versions_and_audit(engine: Engine) -> None:
    with engine.connect() as conn:
        assert active_version_id(conn) is None and active_version_info(conn) is None
        assert load_active(conn).version_id == 0
    first = import_whitelist(engine, make_whitelist_xml([("a.fr", DN), ("b.fr", DN)]), "v1",
                             actor="admin@example.fr")
    assert not first.unchanged and first.warnings == []
    again = import_whitelist(engine, make_whitelist_xml([("a.fr", DN), ("b.fr", DN)]), "v1")
    assert again.unchanged and again.version_id == first.version_id
    assert version_count(engine) == 1
    second = import_whitelist(engine, make_whitelist_xml(
        [("a.fr", DN), ("b.fr", DN), ("c.fr", DN)], truncated=True), "v2")
    assert second.version_id != first.version_id and second.previous_domains == 2
    with engine.connect() as conn:
        versions = list_versions(conn)
        assert [v["id"] for v in versions] == [second.version_id, first.version_id]
        assert [v["active"] for v in versions] == [True, False]
        info = active_version_info(conn)
        assert info is not None and info["source"] == "v2" and info["domains"] == 3
        assert info["warnings"].startswith("document truncated after 3")
        assert load_active(conn).is_whitelisted("c.fr")
    with pytest.raises(WhitelistImportError, match="cannot import broken: not well-formed"):
        import_whitelist(engine, b"<ListeBlancheMSSante", "broken")
    with pytest.raises(WhitelistImportError, match="DOCTYPE"):
        import_whitelist(engine, DOCTYPE_BOMB.encode(), "bomb")
    with engine.connect() as conn:
        assert active_version_id(conn) == second.version_id
    assert version_count(engine) == 2
    rows = audit_rows(engine)
    outcomes = [(r["outcome"], r["whitelist_version"]) for r in rows]
    assert outcomes == [(0, first.version_id), (0, first.version_id), (0, second.version_id),
                        (int(Outcome.SERIOUS_FAILURE), second.version_id),
                        (int(Outcome.SERIOUS_FAILURE), second.version_id)]
    assert rows[0]["actor"] == "admin@example.fr" and rows[1]["actor"] == "cli"
    details = [json.loads(str(r["detail"])) for r in rows]
    assert details[0]["sha256"] == first.sha256 and details[0]["entries"] == 2
    assert details[1]["unchanged"] is True
    assert details[2]["truncated"] is True and details[2]["warnings"] == 1
    assert details[3]["source"] == "broken" and "not well-formed" in str(rows[3]["reason"])


def test_shrink_guard_ratio(engine: Engine) -> None:
    domains = [(f"d{i}.fr", DN) for i in range(100)]
    import_whitelist(engine, make_whitelist_xml(domains), "full")
    # dropping 10 of 100 is allowed, 11 more (11 of the 90) is not
    assert import_whitelist(engine, make_whitelist_xml(domains[:90]), "90").domains == 90
    with pytest.raises(WhitelistImportError, match="drops 11 of 90"):
        import_whitelist(engine, make_whitelist_xml(domains[:79]), "79")
    refused = audit_rows(engine)[-1]
    assert refused["outcome"] == int(Outcome.MINOR_FAILURE)
    assert "drops 11 of 90" in str(refused["reason"])
    # replacing domains counts what disappears, not the total
    swapped = domains[:70] + [(f"new{i}.fr", DN) for i in range(40)]
    with pytest.raises(WhitelistImportError, match="drops 20 of 90"):
        import_whitelist(engine, make_whitelist_xml(swapped), "swapped")
    assert import_whitelist(engine, make_whitelist_xml(swapped), "swapped",
                            max_shrink_ratio=0.25).domains == 110
    with pytest.raises(ValueError):
        import_whitelist(engine, make_whitelist_xml(swapped), "x", max_shrink_ratio=1.5)


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


def test_dn_comparison_is_by_rdn_sequence_multi_valued_rdns_as_sets() -> None:
    """RFC 4514 §2.1 / X.501: an RDN sequence, in order (or wholly reversed: X.500 order);
    only the AVAs of one multi-valued RDN compare as a set."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from trustspace.dn import canonical_name, parse_dn

    listed = parse_dn("CN=mx.op.fr,OU=312345678,O=Op,C=FR")
    assert parse_dn("CN=mx.op.fr+OU=312345678,O=Op,C=FR") != listed  # CN and OU in one RDN
    assert parse_dn("OU=312345678,CN=mx.op.fr,O=Op,C=FR") != listed  # RDNs out of order
    assert parse_dn("C=FR,O=Op,OU=312345678,CN=mx.op.fr") == listed  # wholly reversed
    assert parse_dn("OU=1+CN=x,O=Op") == parse_dn("CN=x+OU=1,O=Op")  # AVAs: a set
    wl = Whitelist(1, parse_whitelist(make_whitelist_xml(
        [("op.fr", "CN=mx.op.fr,OU=312345678,O=Op,C=FR")])).entries)
    merged = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]),
        x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Op")]),
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "312345678"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mx.op.fr")])])
    assert not wl.dn_listed("op.fr", canonical_name(merged))
    proper = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Op"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "312345678"),
                        x509.NameAttribute(NameOID.COMMON_NAME, "mx.op.fr")])
    assert wl.dn_listed("op.fr", canonical_name(proper))
    assert canonical_name(merged) == parse_dn(merged.rfc4514_string())


def test_dn_listed_ignores_unparsable_dns() -> None:
    from trustspace.dn import parse_dn

    wl = Whitelist(1, parse_whitelist(make_whitelist_xml(
        [("a.fr", "not a dn"), ("a.fr", DN)])).entries)
    assert wl.dn_listed("A.FR.", parse_dn(DN))
    assert not wl.dn_listed("a.fr", ())  # an empty subject never matches
    assert not wl.dn_listed("b.fr", parse_dn(DN)) and not wl.dn_listed("..", parse_dn(DN))


def test_every_real_dn_parses_and_variants_collapse() -> None:
    require_file(REAL_LIST, source="../shared/data (the national whitelist)")
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
