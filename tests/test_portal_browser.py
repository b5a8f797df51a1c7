"""The portal in a real browser: Debian's chromium driven by Playwright logs in at the real
OIDC test provider (its login and consent pages), creates an app password, which curl then
uses over IMAP (STARTTLS, the node's CA), revokes it (curl refused), and finds the login
and the revocation in the access history page. TLS is verified by the browser too: the
node's and the provider's certificates are the only ones it accepts unverified by a
system anchor (pinned by SPKI hash). A failure leaves screenshots under the test's tmp
dir (the path is printed)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.node import DOMAIN, Node
from tests.oidc import OidcProvider
from tests.peers import missing
from tests.test_portal import ALICE_ID, portal_node

CHROMIUM = "/usr/bin/chromium"
ALICE = f"alice@{DOMAIN}"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


def spki_hash(cert_file: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): chromium's --ignore-certificate-errors-spki-list."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Node, OidcProvider]]:
    if not os.access(CHROMIUM, os.X_OK):
        missing("chromium not installed (Debian package 'chromium')")
    node, provider = portal_node(tmp_path)
    try:
        yield node, provider
    finally:
        if node.running:
            node.stop()
        provider.stop()


def curl_imap(node: Node, secret: str) -> subprocess.CompletedProcess[str]:
    """LIST over IMAP with STARTTLS required, the node's certificate verified."""
    return subprocess.run(
        ["curl", "-sS", "--ssl-reqd", "--cacert", str(node.ca_file), "--max-time", "20",
         "--user", f"{ALICE}:{secret}", f"imap://127.0.0.1:{node.ports['imap']}/"],
        capture_output=True, text=True, timeout=60)


def test_browser_login_app_password_curl_revoke_history(
        served: tuple[Node, OidcProvider], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright  # the browser driver of this test only

    node, provider = served
    portal = f"https://127.0.0.1:{node.ports['portal']}"
    pins = ",".join(spki_hash(p) for p in (node.data_dir / "pki" / "server.crt",
                                           provider.cert_file))
    shots = tmp_path / "screenshots"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*ARGS, f"--ignore-certificate-errors-spki-list={pins}"])
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        step = "start"
        try:
            step = "portal home"
            page.goto(portal + "/")
            page.click("#login")
            step = "provider login form"
            page.wait_for_url(re.compile(re.escape(provider.issuer) + ".*"))
            page.fill("input[name=login]", ALICE_ID)
            page.fill("input[name=password]", "any")
            page.click("button[type=submit]")
            step = "provider consent"
            while page.url.startswith(provider.issuer):  # the consent page, if asked
                page.click("button[type=submit]")
                page.wait_for_load_state()
            step = "logged in"
            page.wait_for_selector("text=Create an app password")
            assert ALICE in page.content()

            step = "create an app password"
            page.fill(".label-input", "Thunderbird laptop")
            page.click(".create-button")
            secret = (page.text_content("#secret") or "").strip()
            assert secret

            step = "curl with it"
            used = curl_imap(node, secret)
            assert used.returncode == 0, used.stderr
            assert "INBOX" in used.stdout

            step = "revoke it"
            page.click("#done")
            row = page.locator("tr", has_text="Thunderbird laptop")
            assert "active" in (row.text_content() or "")
            row.locator("button.revoke").click()
            page.wait_for_selector("text=revoked")
            refused = curl_imap(node, secret)
            assert refused.returncode == 67, (refused.returncode, refused.stderr)  # login denied

            step = "access history"
            page.click("#nav-history")
            page.wait_for_selector("#history")
            history = page.text_content("#history") or ""
            for seen in ("Portal login", "App password created", "App password revoked",
                         "IMAP login"):
                assert seen in history, (seen, history)
            assert secret not in page.content()
        except BaseException:
            shots.mkdir(exist_ok=True)
            shot = shots / f"{re.sub(r'[^a-z]+', '-', step)}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failure ({step}): {shot}")
            raise
        finally:
            browser.close()
    revoked = node.wait_audit(lambda r: r["event"] == "portal.app_password.revoke")
    assert revoked[0]["mailbox"] == ALICE
