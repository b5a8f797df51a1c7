"""A real OpenLDAP slapd for the directory tests: generated config, the project's schema."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests import peers

REPO = Path(__file__).resolve().parents[1]
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=sante,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
READER_DN = f"cn=reader,{SUFFIX}"
PASSWORD = "secret-test-password"


def available() -> bool:
    return Path(SLAPD).exists() and Path(SLAPADD).exists() and Path("/etc/ldap/schema").exists()


def require() -> None:
    """slapd, slapadd and the schema directory, or skip (locally) / fail (CI)."""
    peers.require_peer("slapd", "slapd")
    peers.require_peer("slapadd", "slapd")
    peers.require_file("/etc/ldap/schema", "slapd")


def schema_from_ldif(ldif: str) -> str:
    """config/mss-directory.ldif (cn=config form) as a slapd.conf schema file."""
    text = re.sub(r"\n  ", " ", ldif)  # LDIF continuation lines
    out = []
    for line in text.splitlines():
        if line.startswith("olcAttributeTypes:"):
            out.append("attributetype " + line.split(":", 1)[1].strip())
        elif line.startswith("olcObjectClasses:"):
            out.append("objectclass " + line.split(":", 1)[1].strip())
    return "\n".join(out) + "\n"


def person_ldif(i: int, *, mail: str | None = None, extra: str = "") -> str:
    mail = mail if mail is not None else f"pro{i}@annuaire.mssante.fr"
    mail_line = f"mail: {mail}\n" if mail else ""
    return (f"dn: uid=p{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
            f"objectClass: mssMailbox\nuid: p{i}\ncn: Dr Pro {i}\nsn: Pro{i}\n"
            f"givenName: Jeanne\n{mail_line}mssMailboxType: PER\nmssIdNat: 8{10000000000 + i}\n"
            f"mssProfession: Medecin\nmssStructureId: 1{750000000 + i % 1000}\n"
            f"l: Ville{i % 50}\n{extra}\n")


@dataclass
class Slapd:
    directory: Path
    port: int
    sizelimit: int | None = None  # per search (a paged search must get past it)
    paged_total: int | None = None  # total a paged search may return (None: unlimited)
    tls: tuple[Path, Path, Path] | None = None  # (CA, certificate, key): StartTLS offered
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.directory / "slapd.conf"

    def configure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "db").mkdir(exist_ok=True)
        schema = self.directory / "mss-directory.schema"
        schema.write_text(schema_from_ldif((REPO / "config" / "mss-directory.ldif").read_text()))
        size = self.sizelimit or "unlimited"
        total = self.paged_total or "unlimited"
        limits = f"sizelimit size.soft={size} size.hard={size} size.prtotal={total}\n"
        tls = "" if self.tls is None else (f"TLSCACertificateFile {self.tls[0]}\n"
                                          f"TLSCertificateFile {self.tls[1]}\n"
                                          f"TLSCertificateKeyFile {self.tls[2]}\n")
        self.conf.write_text(f"""{tls}
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {schema}
pidfile {self.directory}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{limits}
database mdb
maxsize 4294967296
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {PASSWORD}
directory {self.directory}/db
index objectClass eq
index mail eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{READER_DN}" read by * none
""")

    def load(self, entries: Iterable[str]) -> None:
        """Bulk-load LDIF entries with slapadd (server stopped)."""
        ldif = self.directory / "load.ldif"
        with open(ldif, "w") as out:
            out.write(f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
                      f"dc: sante\no: Sante test\n\n"
                      f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\n"
                      f"ou: people\n\n"
                      f"dn: {READER_DN}\nobjectClass: organizationalRole\n"
                      f"objectClass: simpleSecurityObject\ncn: reader\n"
                      f"userPassword: {PASSWORD}\n\n")
            for entry in entries:
                out.write(entry)
        subprocess.run([SLAPADD, "-q", "-f", str(self.conf), "-l", str(ldif)], check=True,
                       capture_output=True)
        ldif.unlink()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("slapd did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
            self.process = None
