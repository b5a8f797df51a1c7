"""mss/mailstore/identities.py on SQLite and PostgreSQL: a national id's mailboxes (own PER
by RPPS, then granted ORG/APP, enabled only), certificate bindings (APP only, one mailbox
per DN, compared by the canonical key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mss import crypto, db
from mss.mailstore import domains, grants, identities, mailboxes
from mss.mailstore.errors import StoreError
from tests.databases import schema_url
from tests.node import BACKENDS
from trustspace.dn import dn_key, parse_dn

BACKENDS = BACKENDS  # on SQLite and PostgreSQL (tests/conftest.py)
DN = "CN=lps.editeur.test,OU=1750000011,O=EDITEUR,C=FR"


def test_national_id_and_certificates(tmp_path: Path, backend: str) -> None:
    key_file = tmp_path / "master.key"
    crypto.new_master_key_file(key_file)
    url = schema_url(backend, tmp_path)
    engine, reader = db.make_engine(url), db.make_engine(url, writer=False)
    keyring = crypto.Keyring(reader, crypto.FileKeyProvider(key_file))
    try:
        with engine.begin() as conn:
            domains.add_domain(conn, "d.test")
            for name, kind, rpps in (("dr", "PER", "10000000001"), ("dr2", "PER", "10000000001"),
                                     ("org", "ORG", None), ("app", "APP", None),
                                     ("off", "ORG", None)):
                mailboxes.add_mailbox(conn, keyring, f"{name}@d.test", kind, rpps=rpps)
            grants.grant(conn, "org@d.test", "dr@d.test")
            grants.grant(conn, "org@d.test", "dr2@d.test")  # listed once
            grants.grant(conn, "off@d.test", "dr@d.test")
            mailboxes.disable_mailbox(conn, "off@d.test")
            key = dn_key(parse_dn(DN))
            identities.bind_certificate(conn, "app@d.test", DN, key)
            with pytest.raises(StoreError, match="only APP"):
                identities.bind_certificate(conn, "org@d.test", DN, key)
            with pytest.raises(StoreError, match="already bound to app@d.test"):
                identities.bind_certificate(conn, "app@d.test", DN.lower(),
                                            dn_key(parse_dn(DN.lower())))
        with reader.connect() as conn:
            found = identities.mailboxes_of_national_id(conn, "810000000001")
            assert [m.address for m in found] == ["dr2@d.test", "dr@d.test", "org@d.test"]
            assert identities.mailboxes_of_national_id(conn, "810000000002") == []
            assert identities.mailboxes_of_national_id(conn, "10000000001") == []
            bound = identities.mailbox_of_certificate(conn, key)
            assert bound is not None and bound.address == "app@d.test"
            assert [b.cert_dn for b in identities.certificates_of(conn)] == [DN]
        with engine.begin() as conn:
            identities.unbind_certificate(conn, "app@d.test", key)
            with pytest.raises(StoreError, match="no such certificate"):
                identities.unbind_certificate(conn, "app@d.test", key)
        with reader.connect() as conn:
            assert identities.mailbox_of_certificate(conn, key) is None
    finally:
        engine.dispose()
        reader.dispose()
