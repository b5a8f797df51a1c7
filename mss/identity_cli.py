"""``mss auth ...``: the token issuers of ``[[auth.oidc]]`` seen from this node (their
discovery documents and keys over verified TLS) and a token checked as a login would."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from typing import Annotated

import typer

from mss.cli_output import JSON_OPTION, print_json
from mss.cli_support import fail
from mss.config import AuthConfig, load_config, resolve_config_path

auth_app = typer.Typer(no_args_is_help=True,
                       help="Token issuers ([[auth.oidc]]): reachability, token checks.")


def _auth(ctx: typer.Context) -> AuthConfig:
    from mss.logs import configure

    config = load_config(resolve_config_path(ctx.obj.get("config") if ctx.obj else None))
    configure("warning", config.log_file)  # stdout is the command's answer; logs on stderr
    if not config.auth.oidc:
        fail("no [[auth.oidc]] issuer in the configuration")
    return config.auth


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


@auth_app.command("check")
def auth_check(ctx: typer.Context,
               name: Annotated[str | None, typer.Argument(
                   help="One issuer's name (default: every one).")] = None,
               json_out: JSON_OPTION = False) -> None:
    """Fetch each issuer's discovery document and signing keys now, as 'mss serve' does:
    one line each (--json: a list of objects: name, ok, issuer, keys, introspection,
    error); exit 1 if one cannot be reached."""
    from mss.identity.tokens import TokenError, TokenVerifier

    auth = _auth(ctx)
    names = [o.name for o in auth.oidc]
    if name is not None and name not in names:
        fail(f"no [[auth.oidc]] issuer named {name!r} (known: {', '.join(names)})")

    rows: list[dict[str, object]] = []

    async def run() -> bool:
        verifier = TokenVerifier(auth)
        ok = True
        try:
            for one in [name] if name else names:
                try:
                    metadata, kids = await verifier.refresh(one)
                except TokenError as exc:
                    ok = False
                    rows.append({"name": one, "ok": False, "error": exc.reason})
                    if not json_out:
                        print(f"{one}: unreachable: {exc.reason}")
                    continue
                introspection = (metadata.introspection_endpoint or "none") \
                    if verifier.issuer_config(one).introspection else "off"
                rows.append({"name": one, "ok": True, "issuer": metadata.issuer,
                             "keys": list(kids), "introspection": introspection})
                if not json_out:
                    print(f"{one}: ok: {metadata.issuer} keys={','.join(kids) or 'none'} "
                          f"introspection={introspection}")
        finally:
            await verifier.stop(time.monotonic() + 5)
        return ok

    ok = asyncio.run(run())
    if json_out:
        print_json(rows)
    if not ok:
        raise typer.Exit(1)


@auth_app.command("verify-token")
def auth_verify_token(ctx: typer.Context) -> None:
    """Check the access token read on stdin (never an argument: the process list shows
    those) as an OAUTHBEARER login would: who it names, or why it is refused (exit 1)."""
    from mss.identity.tokens import TokenRejected, TokenUnavailable, TokenVerifier

    auth = _auth(ctx)
    token = sys.stdin.readline().strip()
    if not token:
        fail("no token on stdin")

    async def run() -> int:
        verifier = TokenVerifier(auth)
        try:
            identity = await verifier.verify(token)
        except TokenRejected as exc:
            print(f"refused: {exc.reason}")
            return 1
        except TokenUnavailable as exc:
            print(f"unavailable (temporary): {exc.reason}")
            return 1
        finally:
            await verifier.stop(time.monotonic() + 5)
        print(f"accepted: issuer={identity.issuer_name} subject={identity.subject} "
              f"national_id={identity.national_id or '-'} acr={identity.acr or '-'} "
              f"kind={identity.kind} jti={identity.jti or '-'} "
              f"expires={_when(identity.expires_at)}")
        return 0

    status = asyncio.run(run())
    if status:
        raise typer.Exit(status)
