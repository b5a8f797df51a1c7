"""Metrics, health and readiness (issue 17, docs/metrics.md): a node of two workers scraped
over HTTP during real SMTP (smtplib) and IMAP (imaplib) traffic, the counts exact against
the traffic sent; /readyz when the database file is made unreadable, and back; the shipped
alert rules checked by promtool; the Grafana dashboard naming only exposed metrics."""

from __future__ import annotations

import imaplib
import json
import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.node as node_module
from audit.events import Event, Outcome
from audit.journal import AuditRecord
from mss.metrics import login_labels, refusal_reason
from tests.node import BACKENDS, DOMAIN, PASSWORD, Node, make_node, wait_for
from tests.node import mx_session as mx
from tests.node import simple_message as message

REPO = Path(__file__).resolve().parents[1]
BACKENDS = BACKENDS  # the node of the traffic tests is SQLite's; readiness also on PostgreSQL
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
REMOTE = "dr.martin@operator-a.mssante.fr"
# root bypasses file modes: the node runs without the capabilities that do it, so a file
# made mode 000 is unreadable to it as to any other process (capabilities(7))
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --------------------------------------------------------------------------- helpers
def get(node: Node, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{node.ports['admin']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(node: Node) -> tuple[Samples, set[str]]:
    """Every sample of /metrics, and the names of the families it declares."""
    status, body = get(node, "/metrics")
    assert status == 200, body
    samples: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, names


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)




def submission(node: Node, password: str = PASSWORD) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", node.ports["submission"], timeout=10)
    client.starttls(context=node.client_context())
    client.ehlo()
    client.user, client.password = ALICE, password
    client.auth("PLAIN", client.auth_plain)  # one attempt (login() would try LOGIN after)
    return client


def imap(node: Node, password: str = PASSWORD) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=10)
    client.starttls(ssl_context=node.client_context())
    client.login(BOB, password)
    return client


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """Two workers (SO_REUSEPORT: sessions spread over both, counts summed at the scrape),
    served without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    n = make_node(tmp_path_factory.mktemp("metrics"))
    n.config.write_text(n.config.read_text().replace('data_dir = "."',
                                                     'data_dir = "."\nworkers = 2', 1))
    saved = node_module.MSS
    node_module.MSS = [*NO_DAC, sys.executable, "-m", "mss"]
    try:
        n.start()
    finally:
        node_module.MSS = saved
    assert wait_for(lambda: _answers(n), timeout=30), "admin listener not answering"
    yield n
    if n.process is not None:
        n.stop()


def _answers(node: Node) -> bool:
    try:
        return get(node, "/readyz")[0] == 200
    except OSError:
        return False


# --------------------------------------------------------------------------- traffic
EXPECTED = {  # (sample, labels) -> how much the traffic below adds
    ("mss_messages_accepted_total", (("listener", "mx"),)): 3,
    ("mss_messages_accepted_total", (("listener", "submission"),)): 3,
    ("mss_deliveries_total", (("result", "local"),)): 5,
    ("mss_deliveries_total", (("result", "queued"),)): 1,
    ("mss_queue_depth", (("destination", "operator-a.mssante.fr"),)): 1,
    ("mss_sessions_total", (("listener", "mx"), ("protocol", "smtp"))): 4,
    ("mss_sessions_total", (("listener", "submission"), ("protocol", "smtp"))): 4,
    ("mss_sessions_total", (("listener", "imap"), ("protocol", "imap"))): 3,
    ("mss_logins_total", (("method", "password"), ("outcome", "success"),
                          ("protocol", "smtp"))): 3,
    ("mss_logins_total", (("method", "password"), ("outcome", "failure"),
                          ("protocol", "smtp"))): 1,
    ("mss_logins_total", (("method", "password"), ("outcome", "success"),
                          ("protocol", "imap"))): 2,
    ("mss_logins_total", (("method", "password"), ("outcome", "failure"),
                          ("protocol", "imap"))): 1,
    ("mss_imap_command_seconds_count", (("command", "LOGIN"),)): 3,
    ("mss_imap_command_seconds_count", (("command", "SELECT"),)): 2,
    ("mss_imap_command_seconds_count", (("command", "FETCH"),)): 2,
}


def send_traffic(node: Node) -> None:
    for _ in range(3):  # MX: 3 sessions, one message each
        with mx(node) as client:
            assert client.sendmail(REMOTE, [BOB], message(REMOTE, BOB)) == {}
    with mx(node) as client:  # MX: a sender outside the trust space, an unknown recipient
        assert client.mail("someone@gmail.com")[0] == 550
        client.rset()
        assert client.mail(REMOTE)[0] == 250
        assert client.rcpt(f"nobody@{DOMAIN}")[0] == 550
    for _ in range(2):  # submission: 2 logins, one message each
        with submission(node) as client:
            assert client.sendmail(ALICE, [BOB], message(ALICE, BOB)) == {}
    with submission(node) as client:  # and one queued for a peer operator (delivery is off)
        assert client.sendmail(ALICE, [REMOTE], message(ALICE, REMOTE)) == {}
    with pytest.raises(smtplib.SMTPAuthenticationError):
        submission(node, "wrong password").quit()
    for _ in range(2):  # IMAP: 2 logins, SELECT, FETCH
        client = imap(node)
        assert client.select("INBOX")[0] == "OK"
        assert client.fetch("1:*", "(FLAGS)")[0] == "OK"
        client.logout()
    with pytest.raises(imaplib.IMAP4.error):
        imap(node, "wrong password")


def test_counts_exact_during_traffic(node: Node) -> None:
    before, _ = scrape(node)
    scrapes: list[float] = []
    done = threading.Event()
    failures: list[BaseException] = []

    def scraper() -> None:  # scrapes while the traffic runs (bounded: 300 at most)
        while not done.is_set() and len(scrapes) < 300:
            try:
                samples, _ = scrape(node)
                scrapes.append(value(samples, "mss_messages_accepted_total", listener="mx"))
            except BaseException as exc:  # reported below
                failures.append(exc)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        send_traffic(node)
    finally:
        done.set()
        thread.join(30)
    assert not failures, failures
    assert len(scrapes) >= 2 and scrapes == sorted(scrapes)  # answered, never went back

    def deltas() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        after, _ = scrape(node)
        return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in EXPECTED}

    # refusals and failed logins are audited (and so counted) just after their reply
    deadline, seen = time.monotonic() + 20, deltas()
    while seen != EXPECTED and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = deltas()
    assert seen == EXPECTED, {k: (v, EXPECTED[k]) for k, v in seen.items() if v != EXPECTED[k]}
    after, _ = scrape(node)
    refused = {k: v - before.get(k, 0.0) for k, v in after.items()
               if k[0] == "mss_messages_refused_total" and v != before.get(k, 0.0)}
    assert refused == {  # the policy's reason codes, as the audit records them
        ("mss_messages_refused_total", (("listener", "mx"), ("reason", "domain_not_whitelisted"),
                                        ("stage", "sender"))): 1,
        ("mss_messages_refused_total", (("listener", "mx"), ("reason", "recipient-unknown"),
                                        ("stage", "recipient"))): 1,
    }, refused
    assert value(after, "mss_workers", state="answered") == 2  # both workers summed
    assert value(after, "mss_commit_batch_size_count") > 0
    assert value(after, "mss_commit_seconds_count") == value(after, "mss_commit_batch_size_count")
    assert value(after, "mss_whitelist_version") >= 1
    assert value(after, "mss_whitelist_entries") == 2
    assert 0 <= value(after, "mss_whitelist_age_seconds") < 86400
    assert 300 < value(after, "mss_certificate_expiry_days", certificate="server") < 40000
    assert value(after, "mss_database_up") == 1
    assert value(after, "mss_directory_entries") == 0
    assert 0 <= value(after, "mss_queue_oldest_age_seconds",
                      destination="operator-a.mssante.fr") < 120


@pytest.mark.backends("postgresql")
def test_ready_and_gauges_on_postgresql(tmp_path: Path, backend: str) -> None:
    """The readiness probe's own connection and the scrape-time gauges on PostgreSQL."""
    n = make_node(tmp_path, backend=backend, in_process=True)
    n.start()
    try:
        status, body = get(n, "/readyz")
        assert status == 200 and json.loads(body)["checks"]["database"] == "ok", body
        samples, _ = scrape(n)
        assert value(samples, "mss_database_up") == 1
        assert value(samples, "mss_whitelist_entries") == 2
        assert value(samples, "mss_workers", state="answered") == 1
    finally:
        n.stop()


def test_readyz_follows_an_unreadable_database(node: Node) -> None:
    assert get(node, "/healthz") == (200, b"ok\n")
    status, body = get(node, "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "checks": {
        "database": "ok", "keys": "ok", "whitelist": "ok", "listeners": "ok"}}
    database = node.data_dir / "mss.db"
    database.chmod(0o000)
    try:
        status, body = get(node, "/readyz")
        answer = json.loads(body)
        assert status == 503 and answer["ready"] is False, answer
        assert answer["checks"]["database"].startswith("unavailable: "), answer
        assert {k: v for k, v in answer["checks"].items() if k != "database"} == {
            "keys": "ok", "whitelist": "ok", "listeners": "ok"}
        assert get(node, "/healthz") == (200, b"ok\n")  # alive all the same
    finally:
        database.chmod(0o600)
    status, body = get(node, "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True, body


def test_metrics_off_keeps_health(tmp_path: Path) -> None:
    n = make_node(tmp_path, extra_config="\n[metrics]\nenabled = false\n", in_process=True)
    n.start()
    try:
        assert get(n, "/metrics")[0] == 404
        assert get(n, "/healthz") == (200, b"ok\n")
        assert get(n, "/readyz")[0] == 200
    finally:
        n.stop()


# --------------------------------------------------------------------------- shipped files
def _expressions() -> list[str]:
    rules = (REPO / "config" / "prometheus-rules.yml").read_text()
    exprs = re.findall(r"(?ms)^\s+expr: (?:>-\n)?(.*?)(?=^\s+for:)", rules)
    dashboard = json.loads((REPO / "config" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs


def test_dashboard_and_rules_name_exposed_metrics(node: Node) -> None:
    samples, families = scrape(node)
    exposed = families | {name for name, _ in samples}
    for family in families:  # counters' and histograms' series
        exposed |= {family + suffix for suffix in ("_total", "_bucket", "_count", "_sum")}
    exprs = _expressions()
    assert len(exprs) > 20
    named = {m for e in exprs for m in re.findall(r"\bmss_[a-z0-9_]+", e)}
    assert named and named <= exposed, sorted(named - exposed)
    dashboard = json.loads((REPO / "config" / "grafana-dashboard.json").read_text())
    assert dashboard["panels"] and all(p["targets"] for p in dashboard["panels"])


def test_promtool_checks_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian prometheus, make system-deps)")
    proc = subprocess.run([promtool, "check", "rules", str(REPO / "config/prometheus-rules.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 10 rules found" in proc.stdout


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mss_queue_oldest_age_seconds{{instance="n1",destination="operator-a.mssante.fr"}}'
        values: '4000+60x30'
      - series: 'mss_queue_oldest_age_seconds{{instance="n1",destination="operator-b.mssante.fr"}}'
        values: '10+60x30'
      - series: 'mss_whitelist_version{{instance="n1"}}'
        values: '0x30'
      - series: 'mss_certificate_expiry_days{{instance="n1",certificate="server"}}'
        values: '45x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: MssQueueStuck
        exp_alerts:
          - exp_labels: {{severity: warning, instance: n1, destination: operator-a.mssante.fr}}
            exp_annotations:
              summary: "Outbound queue to operator-a.mssante.fr stuck"
              description: "The oldest message for operator-a.mssante.fr has waited 1h 26m 40s.
                Check `mss queue list`, the peer's MX and its certificate (docs/operations.md)."
      - eval_time: 20m
        alertname: MssWhitelistMissing
        exp_alerts:
          - exp_labels: {{severity: critical, instance: n1}}
            exp_annotations:
              summary: "No whitelist in force: every remote domain is refused"
      - eval_time: 20m
        alertname: MssCertificateExpiring
        exp_alerts: []
"""


def test_promtool_alerts_fire_on_their_series(tmp_path: Path) -> None:
    """promtool test rules: a stuck destination alerts and a moving one does not, a missing
    whitelist alerts, a certificate with 45 days left does not."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian prometheus, make system-deps)")
    tests = tmp_path / "alerts.yml"
    tests.write_text(ALERT_TESTS.format(rules=REPO / "config" / "prometheus-rules.yml"))
    proc = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# --------------------------------------------------------------------------- labels (pure)
def test_refusal_reasons_are_bounded_codes() -> None:
    def reason(text: str, **detail: str) -> str:
        return refusal_reason(AuditRecord(Event.SMTP_MESSAGE_REFUSED, reason=text,
                                          detail=dict(detail)))

    assert reason("x", check="domain_not_whitelisted") == "domain_not_whitelisted"
    assert reason("recipient_unknown: nobody@demo.mssante.fr") == "recipient_unknown"
    assert reason("552 5.3.4 Message too big for system") == "5.3.4"
    assert reason("storage failure: OperationalError") == "storage_failure"
    assert reason("Dr Martin <a@b.fr> said hello") == "other"  # never free text


def test_login_labels() -> None:
    def labels(outcome: Outcome, reason: str | None = None, **detail: str) -> tuple[str, str]:
        return login_labels(AuditRecord(Event.IMAP_LOGIN, outcome, reason=reason,
                                        detail=dict(detail)))

    assert labels(Outcome.SUCCESS, method="app-password") == ("app-password", "success")
    assert labels(Outcome.SERIOUS_FAILURE, mechanism="PLAIN") == ("password", "failure")
    assert labels(Outcome.MINOR_FAILURE, "throttled", mechanism="XOAUTH2") == (
        "xoauth2", "throttled")
    assert labels(Outcome.SUCCESS, mechanism="EXTERNAL", method="external") == (
        "external", "success")
    assert labels(Outcome.SERIOUS_FAILURE, mechanism="NTLM") == ("other", "failure")
