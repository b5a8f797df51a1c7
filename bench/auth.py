#!/usr/bin/env python3
"""Login benchmark (a script, not a test): logins per second, the login's latency and the
server CPU per login, for each way a professional or an application logs in over IMAP.

A throw-away node (tests/node.py) with a test PKI (trustspace/testpki.py), a real OpenID
Connect provider (tests/oidc.py: npm oidc-provider, `make test` installs it) as its
[[auth.oidc]] issuer, an app password and an APP mailbox bound to a client certificate.
Each phase runs --clients concurrent clients, each opening connections in a loop
(connect, STARTTLS, AUTHENTICATE with SASL-IR, LOGOUT) until --logins logins in all or
--seconds, whichever comes first:

    baseline      connect + STARTTLS + LOGOUT, no login (the cost of a connection)
    password      AUTHENTICATE PLAIN, the mailbox password (scrypt)
    app-password  AUTHENTICATE PLAIN, an app password (SHA-256 of a random secret)
    jwt           AUTHENTICATE OAUTHBEARER, a JWT access token (keys cached)
    introspected  AUTHENTICATE OAUTHBEARER, an opaque token (RFC 7662, answer cached)
    cert-baseline the certificate front, STARTTLS with the client certificate, no login
    external      AUTHENTICATE EXTERNAL on the certificate front (chain verified, CRL)

Per phase: logins/s (wall clock), p50/p99 of the AUTHENTICATE round trip, the server's CPU
per connection (utime+stime of `mss serve` and its workers, /proc), and the CPU of the
login itself: the phase's CPU per connection minus its baseline's. One JSON line, then a
table; --rounds N repeats the phases interleaved and prints medians. Loopback only.

    .venv/bin/python bench/auth.py --rounds 3
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cluster import tree_cpu  # noqa: E402
from tests.node import PASSWORD, Node, make_node  # noqa: E402
from tests.oidc import ACCOUNT, JWT_RESOURCE, OPAQUE_RESOURCE, OidcProvider  # noqa: E402
from trustspace.testpki import DEFAULT_SERVERS, ServerSpec, init_test_pki  # noqa: E402

DOMAIN = "b.mssante.test"
ALICE, APP = f"alice@{DOMAIN}", f"lps@{DOMAIN}"  # alice: RPPS 10000000001 = ACCOUNT
LPS = ServerSpec("lps", "lps.editeur.test", "1750000011", "EDITEUR LPS TEST", "Paris (75)")
PHASES = ("baseline", "password", "app-password", "jwt", "introspected", "cert-baseline",
          "external")
BASELINE = {"password": "baseline", "app-password": "baseline", "jwt": "baseline",
            "introspected": "baseline", "external": "cert-baseline"}


@dataclass
class Login:
    """How one phase's connections log in: the listener, the TLS context, the command."""

    listener: str
    context: ssl.SSLContext
    command: bytes | None  # the AUTHENTICATE line (SASL-IR), None: no login


@dataclass
class Result:
    phase: str
    logins: int
    seconds: float
    cpu: float  # server CPU seconds over the phase
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def per_second(self) -> float:
        return self.logins / self.seconds if self.seconds else 0.0

    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.logins if self.logins else 0.0

    def p(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(sock: ssl.SSLSocket | socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def _tagged(sock: ssl.SSLSocket | socket.socket, buffer: bytearray, tag: bytes) -> bytes:
    while True:
        line = _line(sock, buffer)
        if line.startswith(tag + b" "):
            return line


def one_connection(port: int, login: Login) -> float | None:
    """Connect, STARTTLS, log in, LOGOUT; the AUTHENTICATE round trip in seconds (None for
    a baseline connection). Raises on a refused login."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        buffer = bytearray()
        _line(raw, buffer)  # greeting
        raw.sendall(b"s STARTTLS\r\n")
        if not _tagged(raw, buffer, b"s").startswith(b"s OK"):
            raise ConnectionError("STARTTLS refused")
        with login.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            buffer = bytearray()
            took = None
            if login.command is not None:
                start = time.perf_counter()
                tls.sendall(login.command)
                answer = _tagged(tls, buffer, b"a")
                took = time.perf_counter() - start
                if not answer.startswith(b"a OK"):
                    raise PermissionError(answer.decode(errors="replace"))
            tls.sendall(b"z LOGOUT\r\n")
            _tagged(tls, buffer, b"z")
            return took


def run_phase(node: Node, phase: str, login: Login, clients: int, logins: int,
              seconds: float, pid: int) -> Result:
    port = node.ports[login.listener]
    lock = threading.Lock()
    result = Result(phase, 0, 0.0, 0.0)
    left = [logins]
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                took = one_connection(port, login)
            except (OSError, PermissionError) as exc:
                with lock:
                    result.errors += 1
                if result.errors == 1:
                    print(f"{phase}: {exc}", file=sys.stderr)
                continue
            with lock:
                result.logins += 1
                if took is not None:
                    result.latencies.append(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu, start = tree_cpu(pid), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    result.cpu = tree_cpu(pid) - cpu
    return result


def sasl(mechanism: str, message: bytes) -> bytes:
    initial = base64.b64encode(message) or b"="  # RFC 4959 §3: "=" is an empty response
    return b"a AUTHENTICATE " + mechanism.encode() + b" " + initial + b"\r\n"


def oauthbearer(token: str) -> bytes:
    return sasl("OAUTHBEARER", f"n,,\x01auth=Bearer {token}\x01\x01".encode())  # RFC 7628 §3.1


def setup(base: Path) -> tuple[Node, OidcProvider, Callable[[], dict[str, Login]]]:
    pki = base / "pki"
    init_test_pki(pki, (*DEFAULT_SERVERS, LPS))
    provider = OidcProvider(base / "oidc").start()
    secret = provider.secret_file(base)
    config = f"""
[pki]
crl_files = ["{pki / "organisations.crl.pem"}"]

[[auth.oidc]]
name = "bench"
issuer = "{provider.issuer}"
audience = ["{JWT_RESOURCE}", "{OPAQUE_RESOURCE}"]
ca_file = "{provider.ca_file}"
required_acr = "eidas1"
client_id = "mss"
client_secret_file = "{secret}"
introspection = true
"""
    tls = {"cert_file": pki / "operator-b.crt", "key_file": pki / "operator-b.key",
           "ca_file": pki / "root.crt"}
    node = make_node(base / "node", with_whitelist=False, domain=DOMAIN, tls=tls,
                     extra_config=config)
    node.cli("mailbox", "add", APP, "--type", "APP", "--cert", str(pki / "lps.crt"))
    added = node.cli("mailbox", "app-password", "add", ALICE, "--label", "bench",
                     "--scope", "imap")
    app_password = added.stdout.strip().splitlines()[-1]  # the secret, on its own line
    node.start()

    plain = ssl.create_default_context(cafile=str(pki / "root.crt"))
    plain.check_hostname = False
    cert = ssl.create_default_context(cafile=str(pki / "root.crt"))
    cert.check_hostname = False
    cert.load_cert_chain(pki / "lps.crt", pki / "lps.key")

    def logins() -> dict[str, Login]:
        """Fresh tokens each round (they live 5 minutes)."""
        jwt_token = provider.access_token(ACCOUNT)
        opaque = provider.access_token(ACCOUNT, resource=OPAQUE_RESOURCE)
        return {
            "baseline": Login("imap", plain, None),
            "password": Login("imap", plain, sasl("PLAIN", f"\0{ALICE}\0{PASSWORD}".encode())),
            "app-password": Login("imap", plain,
                                  sasl("PLAIN", f"\0{ALICE}\0{app_password}".encode())),
            "jwt": Login("imap", plain, oauthbearer(jwt_token)),
            "introspected": Login("imap", plain, oauthbearer(opaque)),
            "cert-baseline": Login("imap-cert", cert, None),
            "external": Login("imap-cert", cert, sasl("EXTERNAL", b"")),
        }

    return node, provider, logins


def spying(pid: int, out: str) -> subprocess.Popen[bytes]:
    raw = ["--format", "raw"] if out.endswith(".txt") else []  # collapsed stacks
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-o", out,
                            "--pid", str(pid), "--rate", "250", "--nonblocking", *raw],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the phase starts
    return spy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--logins", type=int, default=600, help="per phase (password: /5)")
    parser.add_argument("--seconds", type=float, default=30.0, help="per phase at most")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--py-spy", metavar="OUT.svg",
                        help="a flame graph of the server during the jwt phase (py-spy; "
                        ".txt: collapsed stacks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mss-bench-auth-") as tmp:
        node, provider, logins = setup(Path(tmp))
        try:
            assert node.process is not None
            pid = node.process.pid
            rounds: list[dict[str, Result]] = []
            for _ in range(args.rounds):
                ways = logins()
                for way in ways.values():  # warm: discovery, keys, introspection answer
                    if way.command is not None:
                        one_connection(node.ports[way.listener], way)
                results: dict[str, Result] = {}
                for phase in PHASES:
                    spy = spying(pid, args.py_spy) if args.py_spy and phase == "jwt" else None
                    results[phase] = run_phase(
                        node, phase, ways[phase], args.clients,
                        args.logins // 5 if phase == "password" else args.logins,
                        args.seconds, pid)
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                rounds.append(results)
        finally:
            node.stop()
            provider.stop()
    report(rounds)


def report(rounds: list[dict[str, Result]]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    out: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        results = [r[phase] for r in rounds]
        row = {"logins_per_s": med([r.per_second() for r in results]),
               "p50_ms": med([r.p(0.50) for r in results]),
               "p99_ms": med([r.p(0.99) for r in results]),
               "cpu_ms_per_connection": med([r.cpu_ms() for r in results]),
               "errors": sum(r.errors for r in results)}
        if phase in BASELINE:
            row["login_cpu_ms"] = med([r[phase].cpu_ms() - r[BASELINE[phase]].cpu_ms()
                                       for r in rounds])
        out[phase] = row
    password = out["password"]["logins_per_s"] or 1.0
    for phase in ("jwt", "introspected", "external", "app-password"):
        out[phase]["x_password_logins_per_s"] = out[phase]["logins_per_s"] / password
    print(json.dumps({"rounds": len(rounds), "phases": out}))
    print(f"{'phase':<14} {'logins/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/conn':>12} "
          f"{'login CPU ms':>13} {'x password':>11}")
    for phase, row in out.items():
        print(f"{phase:<14} {row['logins_per_s']:9.1f} {row['p50_ms']:8.2f} "
              f"{row['p99_ms']:8.2f} {row['cpu_ms_per_connection']:12.2f} "
              f"{row.get('login_cpu_ms', float('nan')):13.2f} "
              f"{row.get('x_password_logins_per_s', float('nan')):11.1f}")


if __name__ == "__main__":
    main()
