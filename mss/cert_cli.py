"""``mss mailbox cert ...``: the client certificates APP mailboxes log in with (SASL
EXTERNAL, docs/authentication.md). A binding names a subject DN, compared parsed
(trustspace/dn.py); the certificate itself is verified at each login against ``pki``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from audit.events import Event
from mss.cli_output import JSON_OPTION, Column, emit, when
from mss.cli_support import actor, fail, node

cert_app = typer.Typer(no_args_is_help=True,
                       help="Client certificates of APP mailboxes (SASL EXTERNAL).")


def subject_dn(cert_file: Path | None, cert_dn: str | None) -> tuple[str, str]:
    """(RFC 4514 text, canonical key) of ``--cert FILE`` (the first PEM certificate's
    subject) or ``--cert-dn DN``: exactly one of them."""

    from trustspace.dn import DNError, canonical_name, dn_key, parse_dn
    from trustspace.verifier import read_pem_certificates

    if (cert_file is None) == (cert_dn is None):
        fail("give exactly one of --cert FILE or --cert-dn DN")
    if cert_file is not None:
        try:
            certs = read_pem_certificates(cert_file)
        except ValueError as exc:
            fail(f"--cert: {exc}")
        subject = certs[0].subject
        if not subject.rdns:
            fail(f"--cert: {cert_file}: the certificate has an empty subject")
        return subject.rfc4514_string(), dn_key(canonical_name(subject))
    assert cert_dn is not None
    try:
        return cert_dn.strip(), dn_key(parse_dn(cert_dn))
    except DNError as exc:
        fail(f"--cert-dn: {exc}")


CertFile = Annotated[Path | None, typer.Option(
    "--cert", help="PEM certificate whose subject DN logs in as the mailbox.")]
CertDn = Annotated[str | None, typer.Option(
    "--cert-dn", help="Or the subject DN itself (RFC 4514).")]


@cert_app.command("add")
def cert_add(ctx: typer.Context, address: str, cert: CertFile = None,
             cert_dn: CertDn = None) -> None:
    """Bind a certificate's subject DN to an APP mailbox."""
    from audit.journal import AuditRecord, append
    from mss.mailstore.identities import bind_certificate

    text, key = subject_dn(cert, cert_dn)
    with node(ctx) as node_app, node_app.engine.begin() as conn:
        mailbox = bind_certificate(conn, address, text, key)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_CERT_BIND, actor=actor(),
                                  mailbox=mailbox.address, detail={"cert_dn": text})])
    print(f"certificate DN {text} bound to {mailbox.address}")


@cert_app.command("remove")
def cert_remove(ctx: typer.Context, address: str, cert: CertFile = None,
                cert_dn: CertDn = None) -> None:
    """Unbind a subject DN from its mailbox (effective at the next login)."""
    from audit.journal import AuditRecord, append
    from mss.mailstore.identities import unbind_certificate

    text, key = subject_dn(cert, cert_dn)
    with node(ctx) as node_app, node_app.engine.begin() as conn:
        mailbox = unbind_certificate(conn, address, key)
        append(conn, [AuditRecord(Event.ADMIN_MAILBOX_CERT_UNBIND, actor=actor(),
                                  mailbox=mailbox.address, detail={"cert_dn": text})])
    print(f"certificate DN {text} unbound from {mailbox.address}")


@cert_app.command("list")
def cert_list(ctx: typer.Context, address: Annotated[str | None, typer.Argument()] = None,
              json_out: JSON_OPTION = False) -> None:
    """The bindings: mailbox, subject DN, since."""
    from mss.mailstore.identities import certificates_of

    with node(ctx) as node_app, node_app.reader.connect() as conn:
        rows = [{"mailbox": b.mailbox, "cert_dn": b.cert_dn, "created_at": b.created_at}
                for b in certificates_of(conn, address)]
    emit(rows, (Column("mailbox"), Column("cert_dn", header="subject DN"),
                Column("created_at", header="since", format=when, min_width=10)),
         json_out=json_out)
