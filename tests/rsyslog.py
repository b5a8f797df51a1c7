"""A real rsyslog receiver (RFC 5425 syslog over mutual TLS) for the audit shipping tests."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests import peers

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
LINE = re.compile(r'^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) \[meta sequenceId="(\d+)"\] (.*)$')


# what the receiver writes per message: the RFC 5424 header fields, then MSG
TEMPLATE = ("<%pri%>%protocol-version% %timereported:::date-rfc3339% %hostname% %app-name% "
            "%msgid% %structured-data% %msg%\\n")


GTLS_DRIVER = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"


def available() -> bool:
    return Path(RSYSLOGD).exists() and Path(GTLS_DRIVER).exists()


def require() -> None:
    """rsyslogd and its TLS driver, or skip (locally) / fail (CI): tests/peers.py."""
    peers.require_peer("rsyslogd", "rsyslog")
    peers.require_file(GTLS_DRIVER, "rsyslog-gnutls")


@dataclass
class Received:
    pri: int
    timestamp: str
    hostname: str
    app: str
    msgid: str
    sequence: int
    xml: str


@dataclass
class Receiver:
    directory: Path
    port: int
    ca: Path
    cert: Path
    key: Path
    transport: str = "tls"  # or "udp"
    process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> Path:
        return self.directory / "received.log"

    def start(self) -> None:
        work = self.directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "rsyslog.conf"
        conf.write_text(f'''
global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{self.ca}"
       defaultNetstreamDriverCertFile="{self.cert}"
       defaultNetstreamDriverKeyFile="{self.key}")
{self._input()}
template(name="audit" type="string" string="{TEMPLATE}")
*.* action(type="omfile" file="{self.output}" template="audit")
''')
        with open(self.directory / "rsyslogd.err", "ab") as err:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.directory / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 15
        if self.transport == "udp":  # nothing to connect to: wait for the pid file
            while not (self.directory / "rsyslogd.pid").exists():
                assert time.monotonic() < deadline, "rsyslogd did not start"
                time.sleep(0.1)
            time.sleep(0.3)
            return

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("rsyslogd did not listen: "
                             + (self.directory / "rsyslogd.err").read_text())

    def _input(self) -> str:
        if self.transport == "udp":
            return (f'module(load="imudp")\n'
                    f'input(type="imudp" address="127.0.0.1" port="{self.port}")')
        return ('module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"\n'
                '       streamDriver.authMode="x509/certvalid")\n'
                f'input(type="imtcp" address="127.0.0.1" port="{self.port}")')

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)
            self.process = None

    def messages(self) -> list[Received]:
        if not self.output.exists():
            return []
        out = []
        for line in self.output.read_text("utf-8", "replace").splitlines():
            m = LINE.match(line)
            if m:
                xml = m.group(7).lstrip("\ufeff")
                out.append(Received(int(m.group(1)), m.group(2), m.group(3), m.group(4),
                                    m.group(5), int(m.group(6)), xml))
        return out
