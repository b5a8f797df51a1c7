"""Whitelist history (issue 16 part 7): ``mss whitelist versions`` and ``mss whitelist
rollback VERSION`` (audited, the shrink guard unless --force, picked up by a running node
like an import; the version it replaces is withdrawn and not imported again unless forced).
"""

from __future__ import annotations

import smtplib
from pathlib import Path

from tests.node import DOMAIN, PASSWORD, REMOTE_DOMAINS, Node, make_node, wait_for
from tests.test_keys import one_line_error
from tests.whitelist_fixtures import make_whitelist_xml

ALICE = f"alice@{DOMAIN}"
NEW_PEER = "newpeer.mssante.fr"
NEW_DN = "CN=mx.newpeer.fr,OU=311111111,O=New Peer,ST=Paris (75),C=FR"


def rcpt_reply(node: Node, rcpt: str) -> int:
    """The submission listener's reply code to RCPT TO *rcpt* from alice (a real client)."""
    with smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=15) as client:
        client.starttls(context=node.client_context())
        client.login(ALICE, PASSWORD)
        client.mail(ALICE)
        code, _ = client.rcpt(rcpt)
        client.rset()
        return code


def test_versions_and_rollback(tmp_path: Path) -> None:
    node = make_node(tmp_path)  # version 1: the test list (two operators' domains)
    bigger = tmp_path / "v2.xml"
    bigger.write_bytes(make_whitelist_xml([*REMOTE_DOMAINS, (NEW_PEER, NEW_DN)],
                                          generated="2026-12-01T10:00:00Z"))
    node.cli("whitelist", "import", str(bigger))
    versions = node.cli_json("whitelist", "versions")
    assert [(v["id"], v["active"], v["domains"], v["withdrawn_at"]) for v in versions] == \
        [(2, True, 3, None), (1, False, 2, None)]
    assert versions[0]["generated_at"] == "2026-12-01T10:00:00Z"
    assert versions[0]["source"] == str(bigger) and versions[0]["entries"] == 3
    table = node.cli("whitelist", "versions").stdout.splitlines()
    assert "imported" in table[0] and "active" in table[0]
    assert max(map(len, table)) <= 80  # COLUMNS=80 (tests/node.py)
    node.start()
    try:
        assert rcpt_reply(node, f"dr.x@{NEW_PEER}") == 250
        # bad input: one line, exit 2, nothing changed, audited
        for args, expected in ((("2",), "already in force"), (("9",), "no whitelist version 9"),
                               (("1",), "drops 1 of 3 domains")):
            line = one_line_error(node.cli("whitelist", "rollback", *args, check=False))
            assert expected in line, line
        assert node.cli_json("whitelist", "show")["id"] == 2
        out = node.cli("whitelist", "rollback", "1", "--force").stdout
        assert "version 1 in force again" in out and "version 2 withdrawn" in out, out
        # the running node picks it up as after an import (whitelist.reload_interval)
        wait_for(lambda: rcpt_reply(node, f"dr.x@{NEW_PEER}") == 550, timeout=15)
        assert rcpt_reply(node, "dr.y@operator-a.mssante.fr") == 250
    finally:
        node.stop()
    versions = node.cli_json("whitelist", "versions")
    assert [(v["id"], v["active"], v["withdrawn_at"] is not None) for v in versions] == \
        [(2, False, True), (1, True, False)]
    assert "withdrawn" in node.cli("whitelist", "versions").stdout
    # the withdrawn document is not imported again (a fetch of the same publication)...
    line = one_line_error(node.cli("whitelist", "import", str(bigger), check=False))
    assert "withdrawn by mss whitelist rollback" in line, line
    assert node.cli_json("whitelist", "show")["id"] == 1
    # ... unless forced; and rolling forward to the withdrawn version clears its mark
    node.cli("whitelist", "rollback", "2", "--force")
    versions = {v["id"]: v for v in node.cli_json("whitelist", "versions")}
    assert versions[2]["active"] and versions[2]["withdrawn_at"] is None
    assert versions[1]["withdrawn_at"] is not None
    again = node.cli("whitelist", "import", str(_v1(tmp_path)), "--force").stdout
    assert "version 3 in force" in again, again
    records = node.audit("--event", "whitelist.rollback")
    assert [r["outcome"] for r in records] == [4, 4, 4, 0, 0]
    assert records[3]["detail"] == {"version": 1, "from": 2, "dropped": 1,
                                    "previous_domains": 3, "domains": 2, "forced": True}
    assert records[3]["whitelist_version"] == 1 and records[0]["reason"]
    imports = node.audit("--event", "whitelist.import")
    assert [r["outcome"] for r in imports][-2:] == [4, 0]


def _v1(tmp_path: Path) -> Path:
    """Version 1's document again (withdrawn by the roll forward: imported with --force)."""
    path = tmp_path / "v1.xml"
    path.write_bytes(make_whitelist_xml(REMOTE_DOMAINS))
    return path
