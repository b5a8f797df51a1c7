"""A private Postfix instance (Debian package ``postfix``) playing a third operator of the
trust space, for interoperability tests.

Everything of the instance lives in one directory: ``etc/`` (main.cf, master.cf, maps; it is
the ``config_directory``, used with ``postfix -c``), ``spool/`` (``queue_directory``),
``data/``, ``mail/`` (virtual Maildirs) and ``postfix.log`` (``maillog_file``, written by
postlogd: no syslog needed). The system's /etc/postfix and /var/spool/postfix are never
touched. Postfix's master runs as root (it binds its listener, then its daemons drop to
``mail_owner``); without root, or without the package, the tests skip.

The directory is made under /tmp with mode 0755 rather than under pytest's tmp_path (0700
parents): Postfix's virtual(8) delivery agent writes the Maildirs as an unprivileged user,
which must be able to traverse the path.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import peers

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
MAILBOX_USER = "nobody"  # owner of the virtual Maildirs (virtual_uid_maps)

# Debian's master.cf services without chroot (paths are outside the chroot), the port-25
# listener replaced by HOST:PORT (written by ``master_cf``).
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def skip_unless_usable() -> None:
    """Skip (with the reason; fail under CI, tests/peers.py) when this machine cannot run a
    private Postfix."""
    peers.require_file(POSTFIX, "postfix")
    peers.require(os.geteuid() == 0,
                  "Postfix's master process needs root (CI runs the tests as root)")
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam(MAILBOX_USER)
    except KeyError as exc:
        peers.missing(f"user missing for Postfix: {exc}")


@dataclass
class PeerRoute:
    """Where Postfix sends mail for one of our domains, and the name it must find in the
    certificate there (TLS level ``secure``: verified chain + name match)."""
    domain: str
    host: str
    port: int
    cert_name: str


@dataclass
class Postfix:
    base: Path
    domain: str
    host: str
    port: int
    pki: Path
    cert: str  # test-PKI file stem of its own certificate (server and client)
    users: tuple[str, ...] = ("bob", "alice")
    routes: list[PeerRoute] = field(default_factory=list)
    # extra transports: name -> client certificate stem ("" for none), address -> transport
    alt_transports: dict[str, str] = field(default_factory=dict)
    address_transports: dict[str, str] = field(default_factory=dict)
    # raw transport(5) entries, e.g. {"x@domain": "error:5.2.1 mailbox disabled"}
    transport_entries: dict[str, str] = field(default_factory=dict)
    # virtual(5) aliases, rewritten by cleanup after smtpd accepted the recipient
    virtual_aliases: dict[str, str] = field(default_factory=dict)
    # more hosted domains (the same users in each), and more smtpd listeners:
    # "host:port" -> their -o options (e.g. one whose EHLO offers no DSN)
    extra_domains: tuple[str, ...] = ()
    extra_smtpd: dict[str, tuple[str, ...]] = field(default_factory=dict)
    started: bool = False

    # ------------------------------------------------------------------ paths
    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def log_path(self) -> Path:
        return self.base / "postfix.log"

    def maildir(self, user: str, domain: str | None = None) -> Path:
        return self.base / "mail" / (domain or self.domain) / user

    # ------------------------------------------------------------------ configuration
    def main_cf(self) -> str:
        pki, etc = self.pki, self.etc
        nobody = f"{_uid(MAILBOX_USER)}"
        nogroup = f"{_gid(MAILBOX_USER)}"
        return f"""\
# private Postfix instance of the mss interoperability tests (tests/postfix.py)
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.base}/data
myhostname = mx.{self.domain}
mydomain = {self.domain}
myorigin = {self.domain}
mydestination =
# Postfix wants inet_interfaces to be interface addresses; the listener itself is bound
# to {self.host} in master.cf, and outgoing connections leave from it.
inet_interfaces = loopback-only
inet_protocols = ipv4
smtp_bind_address = {self.host}
mynetworks = 127.0.0.1/32
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_transport = error:no local delivery
biff = no
maillog_file_prefixes = {self.base}
maillog_file = {self.log_path}
# quick retries for the tests
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
# mailboxes of {self.domain}: Maildirs under mail/
virtual_mailbox_domains = {" ".join((self.domain, *self.extra_domains))}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_mailbox_base = {self.base}/mail
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nogroup}
virtual_transport = virtual
virtual_alias_maps = texthash:{etc}/virtual_alias

# --- as an MSSante peer: the server side (our operator's mail arrives here)
smtpd_tls_cert_file = {pki}/{self.cert}.crt
smtpd_tls_key_file = {pki}/{self.cert}.key
smtpd_tls_CAfile = {pki}/root.crt
smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1

# --- as an MSSante peer: the client side (mail to our operator's MX)
smtp_tls_cert_file = {pki}/{self.cert}.crt
smtp_tls_key_file = {pki}/{self.cert}.key
smtp_tls_CAfile = {pki}/root.crt
smtp_tls_security_level = secure
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_policy_maps = texthash:{etc}/tls_policy
transport_maps = texthash:{etc}/transport
smtp_tls_loglevel = 1
"""

    def master_cf(self) -> str:
        lines = [f"{self.host}:{self.port} inet n - n - - smtpd", _SERVICES.rstrip()]
        for address, options in self.extra_smtpd.items():
            lines.append(f"{address} inet n - n - - smtpd"
                         + "".join(f"\n  -o {o}" for o in options))
        for name, cert in self.alt_transports.items():  # cert "": presents none
            crt, key = (f"{self.pki}/{cert}.crt", f"{self.pki}/{cert}.key") if cert else ("", "")
            lines.append(f"{name} unix - - n - - smtp\n"
                         f"  -o smtp_tls_cert_file={crt}\n  -o smtp_tls_key_file={key}")
        return "\n".join(lines) + "\n"

    def maps(self) -> dict[str, str]:
        transport = [f"{a} {t}" for a, t in self.transport_entries.items()]
        transport += [f"{a} {t}:[{r.host}]:{r.port}" for a, t in self.address_transports.items()
                     for r in self.routes if a.endswith("@" + r.domain)]
        transport += [f"{r.domain} smtp:[{r.host}]:{r.port}" for r in self.routes]
        policy = [f"[{r.host}]:{r.port} secure match={r.cert_name}" for r in self.routes]
        boxes = [f"{u}@{d} {d}/{u}/" for d in (self.domain, *self.extra_domains)
                 for u in self.users]
        return {"transport": "\n".join(transport), "tls_policy": "\n".join(policy),
                "vmailbox": "\n".join(boxes),
                "virtual_alias": "\n".join(f"{a} {t}" for a, t in self.virtual_aliases.items())}

    def write_config(self) -> None:
        for sub in ("etc", "spool", "data", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chown(self.base / "data", _uid("postfix"), -1)  # master.lock, TLS caches
        os.chown(self.base / "mail", _uid(MAILBOX_USER), _gid(MAILBOX_USER))
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(self.master_cf())
        for name, text in self.maps().items():
            (self.etc / name).write_text(text + "\n")

    # ------------------------------------------------------------------ commands
    def run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``postfix -c etc ARGS``; its own messages go to the maillog file."""
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=timeout)

    def start(self, timeout: float = 30.0) -> None:
        self.write_config()
        check = self.run("check")
        if check.returncode != 0:
            raise AssertionError(f"postfix check failed: {self.log_tail()}")
        if self.run("start").returncode != 0:
            raise AssertionError(f"postfix start failed: {self.log_tail()}")
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"postfix did not listen on {self.host}:{self.port}: "
                             f"{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if not self.started:
            return
        pid = self.master_pid()
        self.run("stop", timeout=timeout)
        deadline = time.monotonic() + timeout
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and _alive(pid):  # stop did not finish in time: end the master we started
            os.kill(pid, 9)
        self.started = False

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def sendmail(self, sender: str, recipients: list[str], data: bytes,
                 options: tuple[str, ...] = ()) -> None:
        """Inject a message the way a local program does (sendmail -> postdrop -> pickup);
        *options*: more sendmail(1) options (``-N success`` ``-V envid``: DSN)."""
        proc = subprocess.run([SENDMAIL, "-C", str(self.etc), "-i", "-f", sender, *options,
                               "--", *recipients], input=data, capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    # ------------------------------------------------------------------ reading
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def messages(self, user: str, domain: str | None = None) -> list[bytes]:
        """Every message delivered to *user*'s Maildir (new/ and cur/), oldest first."""
        box = self.maildir(user, domain)
        files = [p for sub in ("new", "cur") if (box / sub).is_dir()
                 for p in (box / sub).iterdir() if p.is_file()]
        return [p.read_bytes() for p in sorted(files, key=lambda p: p.stat().st_mtime_ns)]


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def _gid(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def make_base() -> Path:
    """A fresh 0755 directory for one instance under the system temporary directory."""
    return Path(tempfile.mkdtemp(prefix="mss-postfix-"))


def remove_base(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)
