"""Fetching the published whitelist over HTTP: conditional GET, checksum, shrink guard, the
periodic refresh of ``mss serve``; served by a real HTTP server on loopback."""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mss.config import ConfigError, parse_config
from tests.node import Node, make_node, wait_for
from tests.peers import require_file
from tests.whitelist_fixtures import make_whitelist_xml
from trustspace.fetch import WhitelistFetchError, parse_checksum, redact

REAL_LIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "liste-blanche" / \
    "listeblanchemssante-2025-03-14.xml"


def domains(n: int, prefix: str = "d") -> list[tuple[str, str]]:
    return [(f"{prefix}{i}.mssante.fr", f"CN=mx{i % 3}.op.fr,O=Op,C=FR") for i in range(n)]


@dataclass
class Published:
    """What the fake agency publishes, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    modified: float = 1_700_000_000.0
    fail_with: int | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def publish(self, path: str, body: bytes) -> None:
        self.files[path] = body
        self.modified += 60


def handler_for(published: Published) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            published.requests.append((self.path, dict(self.headers.items())))
            if published.fail_with is not None:
                self.send_error(published.fail_with)
                return
            body = published.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            modified = email.utils.formatdate(published.modified, usegmt=True)
            since = self.headers.get("If-Modified-Since")
            if self.headers.get("If-None-Match") == etag or (
                    since and email.utils.parsedate_to_datetime(since).timestamp()
                    >= int(published.modified) and "If-None-Match" not in self.headers):
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def agency() -> Iterator[tuple[Published, str]]:
    published = Published()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(published))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield published, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path, with_whitelist=False)


def fetch_records(node: Node) -> list[dict[str, object]]:
    return [r for r in node.audit() if r["event"] == "whitelist.fetch"]


def error_line(proc: object) -> str:
    assert proc.returncode == 2, proc  # type: ignore[attr-defined]
    lines = proc.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("mss: error: "), lines
    return str(lines[0])


def test_fetch_then_conditional_get_not_modified(node: Node,
                                                 agency: tuple[Published, str]) -> None:
    published, base = agency
    published.publish("/liste.xml", make_whitelist_xml(domains(50)))
    out = node.cli("whitelist", "fetch", f"{base}/liste.xml").stdout
    assert "50 domains" in out
    assert node.cli("whitelist", "check", "d7.mssante.fr").returncode == 0
    out = node.cli("whitelist", "fetch", f"{base}/liste.xml").stdout
    assert "not modified" in out
    _, headers = published.requests[-1]
    assert headers.get("If-None-Match", "").startswith('"')
    assert "If-Modified-Since" in headers
    records = fetch_records(node)
    assert [r["detail"]["status"] for r in records] == ["imported", "not_modified"]  # type: ignore[index]
    assert all(r["outcome"] == 0 for r in records)
    # A new publication is fetched in full and put in force.
    published.publish("/liste.xml", make_whitelist_xml(domains(52)))
    assert "52 domains (was 50)" in node.cli("whitelist", "fetch", f"{base}/liste.xml").stdout
    # --force skips the validators: a full GET of the same list is "unchanged".
    assert "unchanged" in node.cli("whitelist", "fetch", f"{base}/liste.xml", "--force").stdout
    assert "If-None-Match" not in published.requests[-1][1]


def test_checksum_verified_and_mismatch_keeps_last_good(
        node: Node, agency: tuple[Published, str]) -> None:
    published, base = agency
    good = make_whitelist_xml(domains(20))
    published.publish("/liste.xml", good)
    published.publish("/liste.sha256",
                      f"{hashlib.sha256(good).hexdigest()}  liste.xml\n".encode())
    node.cli("whitelist", "fetch", f"{base}/liste.xml", "--sha256-url", f"{base}/liste.sha256")
    published.publish("/liste.xml", make_whitelist_xml(domains(21)))  # checksum now stale
    err = error_line(node.cli("whitelist", "fetch", f"{base}/liste.xml", "--sha256-url",
                              f"{base}/liste.sha256", check=False))
    assert "checksum mismatch" in err
    assert "domains:   20" in node.cli("whitelist", "show").stdout  # last good in force
    failed = fetch_records(node)[-1]
    assert failed["outcome"] == 8 and "checksum mismatch" in str(failed["reason"])
    # The validators of the refused document were not kept: the next fetch is a full GET.
    published.publish("/liste.sha256", hashlib.sha256(published.files["/liste.xml"])
                      .hexdigest().encode())
    out = node.cli("whitelist", "fetch", f"{base}/liste.xml", "--sha256-url",
                   f"{base}/liste.sha256").stdout
    assert "21 domains (was 20)" in out


def test_http_errors_and_shrink_guard_keep_last_good(
        node: Node, agency: tuple[Published, str]) -> None:
    published, base = agency
    published.publish("/liste.xml", make_whitelist_xml(domains(100)))
    node.cli("whitelist", "fetch", f"{base}/liste.xml")
    published.fail_with = 503
    assert "HTTP 503" in error_line(node.cli("whitelist", "fetch", f"{base}/liste.xml",
                                             check=False))
    published.fail_with = None
    assert "HTTP 404" in error_line(node.cli("whitelist", "fetch", f"{base}/nope.xml",
                                             check=False))
    published.publish("/liste.xml", b"<html>maintenance</html>")
    error_line(node.cli("whitelist", "fetch", f"{base}/liste.xml", check=False))
    published.publish("/liste.xml", make_whitelist_xml(domains(40)))  # drops 60 %
    assert "--force" in error_line(node.cli("whitelist", "fetch", f"{base}/liste.xml",
                                            check=False))
    assert "domains:   100" in node.cli("whitelist", "show").stdout
    # A refused list is not hidden behind a 304 on the next attempt: the validators sent
    # are still those of the list in force, so the refused one comes in full again.
    again = node.cli("whitelist", "fetch", f"{base}/liste.xml", check=False)
    assert "--force" in error_line(again)
    closed = f"http://127.0.0.1:{free_closed_port()}/liste.xml"
    error_line(node.cli("whitelist", "fetch", closed, check=False))
    error_line(node.cli("whitelist", "fetch", "ftp://example.fr/x", check=False))
    assert "whitelist.fetch.url" in error_line(node.cli("whitelist", "fetch", check=False))
    records = fetch_records(node)
    assert [r["outcome"] for r in records] == [0, 8, 8, 8, 8, 8, 8]
    events = [r["event"] for r in node.audit()]
    assert events.count("whitelist.import") == 4  # imported, html refused, shrink x2


def free_closed_port() -> int:
    from tests.node import free_port
    return free_port()


def test_serve_refreshes_periodically(tmp_path: Path, agency: tuple[Published, str]) -> None:
    published, base = agency
    published.publish("/liste.xml", make_whitelist_xml(domains(30)))
    node = make_node(tmp_path, with_whitelist=False, extra_config=(
        f'\n[whitelist.fetch]\nurl = "{base}/liste.xml"\ninterval = 0.5\n'))
    node.start()
    try:
        wait_for(lambda: "domains:   30" in node.cli("whitelist", "show").stdout, 15)
        published.publish("/liste.xml", make_whitelist_xml(domains(31)))
        wait_for(lambda: "domains:   31" in node.cli("whitelist", "show").stdout, 15)
        wait_for(lambda: any(r["detail"]["status"] == "not_modified"  # type: ignore[index]
                             for r in fetch_records(node)), 15)
        # The node uses the new list without a restart (whitelist.reload_interval).
        assert node.cli("whitelist", "check", "d30.mssante.fr").returncode == 0
    finally:
        node.stop()
    assert "whitelist fetched" in (node.log_path.read_text() if node.log_path else "")


def test_real_list_over_http_with_checksum(node: Node, agency: tuple[Published, str]) -> None:
    published, base = agency
    require_file(REAL_LIST, source="../shared/data (the published list)")
    data = REAL_LIST.read_bytes()
    published.publish("/listeblanche.xml", data)
    published.publish("/listeblanche.xml.sha256", hashlib.sha256(data).hexdigest().encode())
    proc = node.cli("whitelist", "fetch", f"{base}/listeblanche.xml", "--sha256-url",
                    f"{base}/listeblanche.xml.sha256")
    assert "in force" in proc.stdout
    first = re.search(rb"<Nom>([^<]+)</Nom>", data)  # the list's first domain
    assert first is not None and first.group(1) == b"adsea29.mssante.fr", first
    listed = node.cli("whitelist", "check", first.group(1).decode(), check=False)
    assert listed.returncode == 0, listed
    assert "adsea29.mssante.fr: whitelisted" in listed.stdout, listed.stdout
    unlisted = node.cli("whitelist", "check", "gmail.com", check=False)
    assert unlisted.returncode == 1, unlisted
    assert "gmail.com: not whitelisted" in unlisted.stdout, unlisted.stdout


def test_units() -> None:
    digest = "a" * 64
    assert parse_checksum(digest.encode()) == digest
    assert parse_checksum(f"{digest.upper()}  liste.xml\n".encode()) == digest
    with pytest.raises(WhitelistFetchError):
        parse_checksum(b"<html>not found</html>")
    assert redact("https://user:secret@agency.example/liste.xml") == \
        "https://agency.example/liste.xml"
    assert redact("https://agency.example/x") == "https://agency.example/x"
    base = {"smtp": {"hostname": "mx.example.fr"}}
    with pytest.raises(ConfigError, match="whitelist.fetch.url"):
        parse_config({**base, "whitelist": {"fetch": {"url": "ftp://x"}}}, Path("/tmp/m.toml"))
    with pytest.raises(ConfigError, match="sha256_url"):
        parse_config({**base, "whitelist": {"fetch": {"sha256_url": "https://x/s"}}},
                     Path("/tmp/m.toml"))
    cfg = parse_config({**base, "whitelist": {"fetch": {"url": "https://x/l.xml"}}},
                       Path("/tmp/m.toml"))
    assert cfg.whitelist.fetch.interval == 21600.0
