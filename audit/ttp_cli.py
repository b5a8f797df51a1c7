"""``mss-ttp``: the trusted third party's program (a separate entry point, no node needed).

``mss-ttp keygen PRIVATE PUBLIC`` makes the third party's X25519 key pair (the public key
goes to the node's ``audit.ttp_public_key_file``, the private key never does);
``mss-ttp reveal --key PRIVATE REQUEST`` opens the sealed values of a request written by
``mss audit reveal-request`` and prints the identifier behind the pseudonym, after checking
that each sealed value was sealed for that pseudonym (:mod:`audit.ttp`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.exceptions import Abort, Exit, TyperException

from audit.ttp import TtpError, generate, key_id, load_private_key, open_sealed
from mss.cli_support import CliError, fail

app = typer.Typer(no_args_is_help=True, add_completion=False, help=(
    "The trusted third party's side of reversible patient pseudonyms."))


@app.command("keygen")
def keygen(private: Annotated[Path, typer.Argument(help="Private key file to create (0600).")],
           public: Annotated[Path, typer.Argument(help="Public key file for the node.")]
           ) -> None:
    """Create an X25519 key pair (PEM)."""
    if private.exists():
        fail(f"{private} exists: not overwritten")
    try:
        key = generate(private, public)
    except OSError as exc:
        fail(f"cannot write the key pair: {exc.strerror}")
    print(f"key {key_id(key)}: private {private} (keep it off the node), public {public}")


def _read_request(path: Path) -> dict[str, Any]:
    try:
        request = json.loads(path.read_text())
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    except ValueError:
        fail(f"{path}: not a reveal request (JSON from 'mss audit reveal-request')")
    if not isinstance(request, dict) or not isinstance(request.get("sealed"), list) \
            or not isinstance(request.get("pseudonym"), str):
        fail(f"{path}: not a reveal request (no pseudonym or sealed values)")
    return request


@app.command("reveal")
def reveal(request_file: Annotated[Path, typer.Argument(
               help="The request written by 'mss audit reveal-request'.")],
           key: Annotated[Path, typer.Option("--key", help="The third party's private key.")],
           json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
           ) -> None:
    """Open the request's sealed values with the private key; print the identifier."""
    request = _read_request(request_file)
    try:
        private = load_private_key(key)
    except TtpError as exc:
        fail(str(exc))
    found: dict[str, Any] | None = None
    errors: list[str] = []
    for sealed in request["sealed"]:
        try:
            value = open_sealed(private, str(sealed))
        except TtpError as exc:
            errors.append(str(exc))
            continue
        if value.get("pseudonym") != request["pseudonym"]:
            fail("a sealed value was sealed for another pseudonym: the request is not "
                 "consistent, nothing revealed")
        if found is not None and (found["id"], found["oid"]) != (value["id"], value["oid"]):
            fail("the sealed values disagree: nothing revealed")
        found = value
    if found is None:
        fail(f"no sealed value opens with key {key_id(private.public_key())}: "
             + "; ".join(dict.fromkeys(errors)))
    result = {"request": request.get("request"), "pseudonym": request["pseudonym"],
              "identifier": found["id"], "oid": found["oid"], "reason": request.get("reason")}
    if json_out:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name + ':':12}{value}")


def main(argv: list[str] | None = None) -> None:
    os.umask(0o077)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="mss-ttp", standalone_mode=False)
    except Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Abort:
        raise SystemExit(130) from None
    except TyperException as exc:
        print(f"mss-ttp: error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(2) from None
    except CliError as exc:
        print(f"mss-ttp: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(0)


if __name__ == "__main__":
    main()
