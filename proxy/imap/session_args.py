"""Parsed arguments of the any-state and not-authenticated commands (RFC 3501 §6.1, §6.2):
pure functions from a :class:`Command` to a frozen value, raising only ImapParseError."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.imap.args import NoArgs, astring, atom, nargs
from proxy.imap.parser import Command
from proxy.imap.tokens import ImapParseError


@dataclass(frozen=True)
class EnableArgs:
    capabilities: tuple[str, ...]  # upper case, as listed (RFC 5161)


@dataclass(frozen=True)
class LoginArgs:
    user: str
    password: str = field(repr=False)  # never in a log line


@dataclass(frozen=True)
class AuthenticateArgs:
    mechanism: str  # upper case
    initial: bytes | None = field(repr=False)  # RFC 4959 SASL-IR; b"" for "="


def parse_id(cmd: Command) -> NoArgs:
    nargs(cmd, 1)  # RFC 2971: the client's parameters are not kept (may identify a user)
    return NoArgs()


def parse_enable(cmd: Command) -> EnableArgs:
    if not cmd.args:
        raise ImapParseError("Missing capability")
    return EnableArgs(tuple(atom(token).upper() for token in cmd.args))


def parse_login(cmd: Command) -> LoginArgs:
    user, password = nargs(cmd, 2)
    return LoginArgs(astring(user).decode("utf-8", "replace"),
                     astring(password).decode("utf-8", "replace"))


def parse_authenticate(cmd: Command) -> AuthenticateArgs:
    args = nargs(cmd, 1, 2)
    mechanism = atom(args[0]).upper()
    if len(args) == 1:
        return AuthenticateArgs(mechanism, None)
    response = astring(args[1])
    return AuthenticateArgs(mechanism, b"" if response == b"=" else response)
