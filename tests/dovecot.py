"""A real Dovecot IMAP server for tests (Debian ``dovecot-imapd``): its own configuration,
state and mail directories, passwd-file users with plain passwords, plain IMAP on a loopback
port from ``free_port``, run in the foreground (``dovecot -F``) and stopped by its pid.

Mail is stored as the ``dovecot`` system user (Dovecot refuses mail access as root), in a
directory of its own outside pytest's 0700 temporary tree.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests import peers
from tests.node import free_port

HOST = "127.0.46.1"  # this suite's loopback range (issue 16, helper "export")


class Dovecot:
    def __init__(self, users: dict[str, str]) -> None:
        binary = peers.require_peer("dovecot", "dovecot-imapd")
        self.users = users
        self.root = Path(tempfile.mkdtemp(prefix="mss-dovecot-"))
        self.root.chmod(0o711)  # the dovecot user reaches its mail directory below
        self.port = free_port(HOST)
        account = pwd.getpwnam("dovecot")
        home = self.root / "home"
        home.mkdir()
        os.chown(home, account.pw_uid, account.pw_gid)
        for sub in ("run", "state"):
            (self.root / sub).mkdir()
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
        self.config = self.root / "dovecot.conf"
        self.config.write_text(f"""\
protocols = imap
listen = {HOST}
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_uid = dovecot
mail_gid = dovecot
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{home}/%u/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
""")
        self.process = subprocess.Popen([binary, "-F", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read() if self.process.stderr else b""
                    self.stop()
                    raise AssertionError(f"dovecot did not start: {err!r} {self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def imap(self, user: str) -> imaplib.IMAP4:
        m = imaplib.IMAP4(HOST, self.port, timeout=30)
        m.login(user, self.users[user])
        return m

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.root, ignore_errors=True)
