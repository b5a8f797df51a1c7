"""Database schema and engine (SQLAlchemy Core).

Plain columns hold only what a server needs to answer without content (ids, sizes, dates,
flags, envelope routing); every message byte lives in ``*_blob`` columns as AES-256-GCM
ciphertext (see :mod:`mss.crypto`). SQLite runs in WAL mode with ``synchronous=FULL`` so that
a commit is on disk (fsync'd) before it returns: a 250 is only sent after that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

metadata = MetaData()

# IMAP counters: UIDVALIDITY and UIDs are 32-bit unsigned (RFC 3501 §9 nz-number), MODSEQs
# 63-bit (RFC 7162 §7); PostgreSQL's integer is signed 32-bit, so bigint there (SQLite's
# INTEGER is 64-bit already: its schema is unchanged). Migration: versions/0004_bigint_counters.
COUNTER = BigInteger().with_variant(Integer(), "sqlite")

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

domains = Table(
    "domains", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),  # IDNA ascii, lower case
    Column("created_at", Float, nullable=False),
    Column("relay_to", String(300)),  # "host:port": inbound mail queued to this next hop
    Column("suspended_at", Float),  # mss domain suspend (issue 16): its mailboxes as suspended
)

mailboxes = Table(
    "mailboxes", metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(320), nullable=False, unique=True),  # lower case
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False),
    Column("type", String(3), nullable=False),  # PER | ORG | APP | CAB
    Column("rpps", String(11)),
    Column("finess", String(9)),
    Column("password_hash", String(255)),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
    Column("disabled_at", Float),
    Column("liste_rouge", Boolean, nullable=False, default=False),  # never published
    # the last IMAP UIDVALIDITY given to one of its folders (RFC 3501 §2.3.1.1: values only
    # grow, a deleted and recreated folder never gets one back; mailstore.folders.next_uidvalidity)
    Column("last_uidvalidity", COUNTER),
    # lifecycle (issue 16, migration 0009): suspended (logins refused, inbound deferred or
    # kept), deletion scheduled (purged, key destroyed, after the grace period), legal hold
    # (no expunge, retention nor delete), sessions begun before sessions_ended_at end
    Column("suspended_at", Float),
    Column("delete_after", Float),
    Column("held_at", Float),
    Column("hold_reason", Text),
    Column("sessions_ended_at", Float),
    # a token login's national id names its PER mailboxes by RPPS (mss/mailstore/identities.py)
    Index("ix_mailboxes_rpps", "rpps"),
)

# APP mailboxes bound to a client certificate's subject DN (SASL EXTERNAL, issue 15):
# dn_key is the DN parsed and canonicalised (trustspace/dn.py, as JSON), one mailbox per DN
mailbox_certificates = Table(
    "mailbox_certificates", metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
    Column("cert_dn", Text, nullable=False),  # RFC 4514 text, as given or read from the cert
    Column("dn_key", String(1024), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ux_mailbox_certificates_dn", "dn_key", unique=True),
    Index("ix_mailbox_certificates_mailbox", "mailbox_id"),
)

master_keys = Table(
    "master_keys", metadata,
    Column("version", Integer, primary_key=True),
    Column("check_value", LargeBinary, nullable=False),  # HMAC proving the right key
    Column("created_at", Float, nullable=False),
    # the master key wrapped by the key provider's KEK (mss/crypto.py); NULL: a database
    # made before providers, whose master key is the key file's line of this version
    Column("wrapped", LargeBinary),
    Column("kek", String(200)),  # the KEK that wrapped it (KeyProvider.kek_id)
)

# Mailbox keys (and the queue key) wrapped by a master key version.
keyring = Table(
    "keyring", metadata,
    Column("key_id", String(64), primary_key=True),  # "mailbox:<id>" | "queue"
    Column("master_version", Integer, ForeignKey("master_keys.version"), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("rewrapped_at", Float),
)

# Tombstones of shredded keys (Keyring.destroy): every node's change watcher drops the keys
# listed after the last seq it saw from its cache.
key_shreds = Table(
    "key_shreds", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("key_id", String(64), nullable=False),
    Column("shredded_at", Float, nullable=False),
)

folders = Table(
    "folders", metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
    # a default folder's name in clear, else a keyed lookup value; name_sealed: the name
    # AES-GCM under the mailbox key (mss/mailstore/names.py)
    Column("name", String(255), nullable=False),
    Column("special_use", String(16)),
    Column("uidvalidity", COUNTER, nullable=False),
    Column("uidnext", COUNTER, nullable=False, default=1),
    Column("highestmodseq", COUNTER, nullable=False, default=1),
    Column("subscribed", Boolean, nullable=False, default=True),
    # IMAP \Recent (RFC 3501 §2.3.2): the highest UID a session has already seen as recent
    # (claimed at SELECT and at the untagged EXISTS of a read-write session); NULL is 0
    Column("recent_uid", COUNTER),
    # set when the folder was deleted while subscribed: the row only keeps the subscription
    # (RFC 3501 §6.3.6: DELETE does not unsubscribe); NULL for a live folder
    Column("deleted_at", Float),
    Column("name_sealed", LargeBinary),
    UniqueConstraint("mailbox_id", "name"),
)

# IMAP delegation: an ORG/APP mailbox shared with a named user (mss mailbox grant/revoke)
mailbox_grants = Table(
    "mailbox_grants", metadata,
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), primary_key=True),
    Column("grantee_id", Integer, ForeignKey("mailboxes.id"), primary_key=True),
    Column("created_at", Float, nullable=False),
    # the grantee may also send as the shared mailbox (Sender: the grantee; issue 16)
    Column("can_send", Boolean, nullable=False, default=False),
)

# App passwords (issue 15): per device, scoped, a SHA-256 of a random secret shown once
# (mss/mailstore/app_passwords.py; migration versions/0005_app_passwords.py)
app_passwords = Table(
    "app_passwords", metadata,
    Column("id", Integer, primary_key=True),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
    Column("label", String(64), nullable=False),  # the device, as its owner named it
    Column("scopes", String(32), nullable=False),  # "imap", "smtp" or "imap,smtp"
    Column("hash", String(128), nullable=False),  # "$sha256$<b64>" of the secret
    Column("created_at", Float, nullable=False),
    Column("created_by", String(16), nullable=False),  # operator | portal
    Column("last_used_at", Float),
    Column("last_used_from", String(64)),  # the client address of that login
    Column("revoked_at", Float),
    Index("ix_app_passwords_mailbox", "mailbox_id"),
)

# Operator accounts (issue 16): a migration login that acts as any mailbox over IMAP, each
# use audited as delegated access (mss/mailstore/operators.py; versions/0010_operators.py)
operators = Table(
    "operators", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),  # not an address
    Column("password_hash", String(255), nullable=False),  # scrypt (mss/passwords.py)
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
)

messages = Table(
    "messages", metadata,
    Column("id", String(32), primary_key=True),  # random, bound into the AEAD data
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id"), nullable=False),
    Column("folder_id", Integer, ForeignKey("folders.id"), nullable=False),
    Column("uid", COUNTER, nullable=False),
    Column("size", Integer, nullable=False),
    Column("internal_date", Float, nullable=False),
    Column("flags", Text, nullable=False, default=""),
    Column("modseq", COUNTER, nullable=False, default=1),
    Column("key_blob", LargeBinary, nullable=False),  # data key wrapped by the mailbox key
    Column("body_blob", LargeBinary, nullable=False),  # nonce || AES-256-GCM(message)
    # when the message entered its folder (delivery, APPEND, COPY, MOVE): the age retention
    # rules count (mss/mailstore/retention.py); NULL in rows older than migration 0010,
    # whose internal date stands for it. Set by default on every insert, by MOVE on update
    Column("saved_at", Float, default=time.time),
    UniqueConstraint("folder_id", "uid"),
    # the retention job finds a folder's expired messages in this index alone
    Index("ix_messages_folder_saved", "folder_id", "saved_at", "internal_date"),
)
# IMAP SELECT reads a folder's message list from this covering index alone (the table rows
# hold the ciphertext: one page or more each)
IMAP_FOLDER_INDEX = Index("ix_messages_folder_meta", messages.c.folder_id, messages.c.uid,
                          messages.c.id, messages.c.flags, messages.c.internal_date,
                          messages.c.size, messages.c.modseq)

outbound_queue = Table(
    "outbound_queue", metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("mail_from", String(320), nullable=False),
    Column("rcpt", String(320), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("message_id", String(998)),
    Column("size", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("key_blob", LargeBinary, nullable=False),
    Column("body_blob", LargeBinary, nullable=False),
    Column("lease_owner", String(32)),  # the worker holding the claim until lease_until
    Column("updated_at", Float),  # last status change (delivered, deferred, bounced)
    Column("remote_reply", Text),  # the peer's final reply (250 ... or 5xx ...)
    # the patient pseudonym of the message (from its delivery.queued record), for the audit
    # records of the delivery: mss audit list --patient follows the message to the peer
    Column("patient", String(40)),
    # RFC 3461 DSN parameters (0010): the recipient's NOTIFY ("NEVER" or kinds joined by
    # commas; NULL: absent) and ORCPT ("addr-type;address", decoded), the transaction's RET
    # and ENVID (decoded); when the last "delayed" report of the row was written
    Column("dsn_notify", String(32)),
    Column("dsn_orcpt", String(512)),
    Column("dsn_ret", String(4)),
    Column("dsn_envid", String(128)),
    Column("delay_reported_at", Float),
    # seconds the row spent under a hold of its domain (mss queue hold): they do not count
    # towards delivery.max_age (added at the release; issue 16)
    Column("held_for", Float, nullable=False, default=0.0, server_default="0"),
    Index("ix_queue_due", "status", "next_attempt_at"),
)

# mss queue hold DOMAIN (issue 16): the delivery worker claims no row of a held domain
queue_holds = Table(
    "queue_holds", metadata,
    Column("domain", String(255), primary_key=True),  # IDNA ascii, lower case
    Column("held_at", Float, nullable=False),
    Column("held_by", String(320), nullable=False),  # the operator (audit actor)
    Column("reason", Text),
)

# The session registry (issue 16, mss sessions): one row per serving process, its heartbeat
# moved every sessions.heartbeat seconds (rows of a process whose heartbeat is older than
# 3 heartbeats are not shown, then reaped), and one row per logged-in client session,
# written in the login's transaction, deleted when the session ends.
serving_processes = Table(
    "serving_processes", metadata,
    Column("id", String(32), primary_key=True),  # random, drawn at each process start
    Column("node", String(255), nullable=False),  # sessions.node, else the host name
    Column("worker", Integer, nullable=False),  # its index among server.workers
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

client_sessions = Table(
    "client_sessions", metadata,
    Column("id", String(32), primary_key=True),  # the session id of its audit records
    Column("process_id", String(32), nullable=False),  # serving_processes.id
    Column("protocol", String(8), nullable=False),  # imap | smtp
    Column("listener", String(32), nullable=False),
    Column("mailbox_id", Integer, nullable=False),  # no foreign key: a purge drops the rows
    Column("remote_addr", String(64), nullable=False),
    Column("auth_method", String(32), nullable=False),  # password, app-password, ...
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),  # mss sessions end: the session ends at its next check
    Index("ix_client_sessions_process", "process_id", "ended_at"),
    Index("ix_client_sessions_mailbox", "mailbox_id"),
)

whitelist_versions = Table(
    "whitelist_versions", metadata,
    Column("id", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("generated_at", String(40)),
    Column("imported_at", Float, nullable=False),
    Column("source", Text, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("domains", Integer, nullable=False),
    Column("warnings", Text, nullable=False, default=""),
    Column("active", Boolean, nullable=False, default=False),
    # when mss whitelist rollback put an older version in force instead of this one: the
    # same document is not imported again (a fetch, say) unless forced (trustspace/registry)
    Column("withdrawn_at", Float),
)

# Where the list is fetched from, and the validators of the last document put in force.
whitelist_sources = Table(
    "whitelist_sources", metadata,
    Column("url", String(2048), primary_key=True),
    Column("etag", String(256)),
    Column("last_modified", String(64)),
    Column("checked_at", Float),
    Column("changed_at", Float),
    Column("last_error", Text),
)

whitelist_entries = Table(
    "whitelist_entries", metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("whitelist_versions.id"), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("dn", Text, nullable=False),
    Column("description", Text),
    Column("responsable_contact", Text),
    Column("support_contact", Text),
    Column("updated_at", String(40)),
    Index("ix_whitelist_entries_version", "version_id"),
)

# Failed logins and lockouts every node sees (mss/throttle.py): append-only rows, so two
# nodes recording at once never wait for each other; pruned once past window and lockout.
login_failures = Table(
    "login_failures", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(400), nullable=False),  # "<scope>:user:<name>" | "<scope>:addr:<ip>"
    Column("at", Float, nullable=False),  # wall clock (time.time()) of the failure or lock
    Column("locked_until", Float),  # set on a lockout row, NULL on a failure row
    Index("ix_login_failures_key", "key", "at"),
    Index("ix_login_failures_at", "at"),
)

# Portal sessions (proxy/portal/sessions.py), in the database so that every worker and node
# serving the portal sees them: the row's id is the SHA-256 of the cookie's secret (a read
# of the table gives no cookie); a row without national_id is a login in progress.
portal_sessions = Table(
    "portal_sessions", metadata,
    Column("id", String(64), primary_key=True),
    Column("public_id", String(32), nullable=False),  # the audit records' session field
    Column("csrf", String(64), nullable=False),
    Column("issuer", String(64), nullable=False),
    Column("national_id", String(128)),
    Column("subject", String(255)),
    Column("state", String(64)),  # OIDC state, nonce and PKCE verifier of a pending login
    Column("nonce", String(64)),
    Column("verifier", String(128)),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Index("ix_portal_sessions_last_seen", "last_seen"),
)

# Sending limits (mss/sending.py): one row per sender and window, bumped in the transaction
# that records an accepted message (or APPEND), so that every worker and node adds up.
send_counters = Table(
    "send_counters", metadata,
    Column("key", String(400), primary_key=True),  # "mailbox:<address>" | "relay:<name>"
    Column("window", COUNTER, primary_key=True),  # int(time.time() // window length)
    Column("messages", COUNTER, nullable=False, default=0),
    Column("recipients", COUNTER, nullable=False, default=0),
    Column("append_bytes", COUNTER, nullable=False, default=0),
    Column("audited", String(64), nullable=False, default=""),  # limits already audited
    Index("ix_send_counters_window", "window"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", String(32), nullable=False),  # ISO 8601 UTC, microseconds
    Column("event", String(64), nullable=False),
    Column("outcome", Integer, nullable=False),  # DICOM EventOutcomeIndicator 0/4/8/12
    Column("actor", String(320)),
    Column("remote_addr", String(64)),
    Column("session", String(32)),
    Column("listener", String(16)),
    Column("message_id", String(998)),
    Column("mail_from", String(320)),
    Column("rcpt", String(320)),
    Column("mailbox", String(320)),
    Column("reason", Text),
    Column("whitelist_version", Integer),
    Column("detail", Text),  # JSON object; never content, never a secret
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_mailbox", "mailbox"),
    Index("ix_audit_ts", "ts"),
)


# Transactional outbox of the audit trail: per destination, the last record shipped.
audit_ship_cursor = Table(
    "audit_ship_cursor", metadata,
    Column("destination", String(64), primary_key=True),
    Column("last_id", Integer, nullable=False, default=0),
    Column("last_success_at", Float),
    Column("last_error", Text),
    Column("last_error_at", Float),
)


# Ed25519-signed checkpoints of the audit chain (record id, record hash, time); from v2 on
# each also signs its sequence number, the records covered and the previous checkpoint's
# hash, so checkpoints form a chain of their own (audit/checkpoints.py).
audit_checkpoints = Table(
    "audit_checkpoints", metadata,
    Column("id", Integer, primary_key=True),
    Column("record_id", Integer, nullable=False),
    Column("record_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("seq", Integer),  # 1, 2, ... (NULL: a v1 checkpoint, outside the chain)
    Column("record_count", Integer),  # records in the chain up to record_id, purged included
    Column("prev_hash", String(64)),  # hash of checkpoint seq - 1 (GENESIS for seq 1)
    Column("hash", String(64)),  # sha256(payload || signature)
    # two writers (nodes, or the CLI beside mss serve) never sign the same sequence number:
    # the second transaction fails and the next checkpoint chains properly
    Index("ux_audit_checkpoint_seq", "seq", unique=True),
)


# Institutions' mail servers allowed on the relay listener (mss relay add).
relays = Table(
    "relays", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("cert_dn", Text),  # RFC 4514 subject DN of its client certificate, or
    Column("password_hash", String(255)),  # scrypt (mss/passwords.py) for SMTP AUTH
    Column("domains", Text, nullable=False),  # comma-separated, IDNA ascii, lower case
    Column("created_at", Float, nullable=False),
)


# Local blocks of peer operators on top of the national whitelist (mss peer block;
# trustspace/blocks.py, migration versions/0011_peer_blocks.py). Rows are never deleted:
# an unblock sets ended_at, so the table is the history and (max id, ended count) its
# version (trustspace/cache.py polls it like the whitelist's).
peer_blocks = Table(
    "peer_blocks", metadata,
    Column("id", Integer, primary_key=True),
    Column("domain", String(255)),  # a peer domain (IDNA ascii, lower case), or
    Column("cert_dn", Text),  # an operator certificate subject DN (RFC 4514, as given)
    Column("dn_key", String(1024)),  # its canonical form (trustspace.dn.dn_key), compared parsed
    Column("until", Float),  # the block ends by itself then; NULL: until unblocked
    Column("reason", Text),  # the operator's words, shown by mss peer list
    Column("created_at", Float, nullable=False),
    Column("created_by", String(320), nullable=False),
    Column("ended_at", Float),  # mss peer unblock
    Column("ended_by", String(320)),
    Index("ix_peer_blocks_domain", "domain"),
    Index("ix_peer_blocks_dn_key", "dn_key"),
)

# The synchronised professional directory (docs/directory.md).
_DIRECTORY_COLUMNS = (
    ("mail", 320), ("type", 8), ("id_nat", 32), ("display_name", 256), ("given_name", 128),
    ("surname", 128), ("profession", 128), ("structure_id", 32), ("service", 256),
    ("city", 128),
)


def _directory_table(name: str, *extra: Column[Any]) -> Table:
    return Table(
        name, metadata,
        Column("dn", Text, primary_key=True),
        *(Column(col, String(size)) for col, size in _DIRECTORY_COLUMNS),
        Column("liste_rouge", Boolean, nullable=False, default=False),
        Column("digest", String(32), nullable=False),  # change detection between runs
        *extra,
    )


directory_entries = _directory_table(
    "directory_entries", Column("updated_at", Float, nullable=False))
Index("ix_directory_mail", directory_entries.c.mail, unique=True)
directory_staging = _directory_table("directory_staging")
Index("ix_directory_staging_mail", directory_staging.c.mail)

directory_runs = Table(
    "directory_runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # full | incremental
    Column("source", String(16), nullable=False, server_default="ldap"),  # directory.sources
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", String(16), nullable=False),  # running | ok | failed
    Column("server", Text),
    Column("entries", Integer, nullable=False, default=0),
    Column("added", Integer, nullable=False, default=0),
    Column("changed", Integer, nullable=False, default=0),
    Column("removed", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("high_water", String(32)),  # newest modifyTimestamp seen
    Column("error", Text),
)

# The mailboxes each source listed as of its last full run plus later incremental ones
# (mss directory reconcile: in the extraction and not in the FHIR API, and back).
directory_seen = Table(
    "directory_seen", metadata,
    Column("source", String(16), primary_key=True),
    Column("mail", String(320), primary_key=True),
    sqlite_with_rowid=False,  # the key is the row: one B-tree, not two
)


# What 'mss directory publish --fhir' last published of each of our mailboxes (issue 19):
# a second run with nothing changed sends nothing; a mailbox gone is deleted where it was.
directory_fhir_published = Table(
    "directory_fhir_published", metadata,
    Column("mail", String(320), primary_key=True),
    Column("resource_type", String(32), nullable=False),  # Practitioner | Organization
    Column("identifier", String(128), nullable=False),  # system|value of the conditional PATCH
    Column("mailbox_type", String(8), nullable=False),  # PER | ORG | APP | CAB
    Column("digest", String(64), nullable=False),  # of the telecom as published
    Column("published_at", Float, nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE (pysqlite's implicit BEGIN is
    # deferred, which turns writer contention into SQLITE_BUSY mid-transaction).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


SCRATCH = "mss.committer.scratch"  # key of Connection.info while a committer batch is open


def scratch(conn: Connection) -> dict[str, Any] | None:
    """The scratch space of the committer's transaction open on *conn*, or None when *conn*
    is not one (a CLI command's own transaction): callers then do without a cache. Here,
    not in mss.committer, so that the audit journal does not load the committer's thread
    machinery into every CLI command."""
    space: dict[str, Any] | None = conn.info.get(SCRATCH)
    return space


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine for ``url``. On SQLite, a *writer* engine opens every transaction with
    ``BEGIN IMMEDIATE``; a reader engine runs each statement on its own (autocommit), which
    never blocks the writer under WAL."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if writer:
            event.listen(engine, "begin", _sqlite_begin)
        return engine
    if writer:  # the committer's few, long transactions: a ping per checkout is cheap
        return create_engine(url, pool_size=8, pool_pre_ping=True,
                             connect_args=_pg_connect_args(url))
    # Readers, as on SQLite, run each statement on its own (autocommit): no BEGIN and no
    # ROLLBACK round trip per checkout, and no pre-ping either (four round trips became
    # one; issue 14's bench/cluster.py). Under READ COMMITTED each statement had its own
    # snapshot anyway. A connection the server dropped fails once, and SQLAlchemy then
    # invalidates the pool (its disconnect handling): that request gets a temporary
    # answer (mss.db.unavailable), the next a new connection. Long reads page by key
    # (:func:`in_pages`): no server-side cursor, which needs a transaction.
    return create_engine(url, pool_size=8, isolation_level="AUTOCOMMIT",
                         connect_args=_pg_connect_args(url))


def in_pages(conn: Connection, query: Select[Any], key: ColumnElement[Any],
             size: int = 5000) -> Iterator[Row[Any]]:
    """The rows of *query* (no ORDER BY of its own; *key*, unique, among its columns) in
    *key* order, *size* at a time (keyset pagination: ``key > last ... LIMIT size``):
    memory bounded by *size* on every backend, without a server-side cursor."""
    name = key.name
    last: Any = None
    while True:
        page = query if last is None else query.where(key > last)
        rows = conn.execute(page.order_by(key).limit(size)).all()
        yield from rows
        if len(rows) < size:
            return
        last = rows[-1]._mapping[name]


# libpq connection parameters (PostgreSQL docs §34.1.2) bounding how long a lost server
# can hold a node: a connection attempt gives up after connect_timeout seconds (per host of
# a multi-host URL); TCP keepalives and tcp_user_timeout turn a silent peer (a site cut off,
# a crashed host) into an error within seconds instead of the kernel's two hours; the pool
# then opens a new connection (writers: at the pre-ping; readers: after the one failed
# read), to the next host of the URL after a failover. A parameter given in the URL's
# query wins.
PG_CONNECT_DEFAULTS: tuple[tuple[str, int], ...] = (
    ("connect_timeout", 5),
    ("keepalives", 1),
    ("keepalives_idle", 10),
    ("keepalives_interval", 3),
    ("keepalives_count", 3),
    ("tcp_user_timeout", 20000),  # milliseconds
)


def _pg_connect_args(url: str) -> dict[str, int]:
    given = make_url(url).query
    return {k: v for k, v in PG_CONNECT_DEFAULTS if k not in given}


# SQLSTATE classes of a server away or going away (PostgreSQL docs appendix A): 08
# connection exception, 53 insufficient resources, 57P operator intervention (shutdown,
# crash, starting up); 25006: a read-only server (a standby, before or after a failover)
_AWAY_SQLSTATES = ("08", "53", "57P", "25006")
_SQLITE_AWAY = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN")


def unavailable(exc: BaseException) -> bool:
    """*exc* says the database is away (stopped, restarting, failing over, the connection
    lost, SQLite busy): a temporary failure, answered 4xx / NO [UNAVAILABLE] while the
    pool reconnects, not a bug nor bad data (a row SQLite cannot decode is also an
    OperationalError: not this)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", "")  # psycopg: None when the server was never reached
    if state != "":
        return (state is None and isinstance(exc, OperationalError | InterfaceError)) or \
            (isinstance(state, str) and state.startswith(_AWAY_SQLSTATES))
    return getattr(orig, "sqlite_errorname", None) in _SQLITE_AWAY


def create_schema(engine: Engine) -> None:
    """Bring the database to this code's schema: the Alembic revisions of mss/migrations
    it lacks (all of them on a new database; docs/database.md). Tables are added to
    ``metadata`` above AND by a revision, never by ``create_all``."""
    from mss.schema import upgrade

    upgrade(engine)


class DatabaseUnusable(Exception):
    """The database cannot be opened or read (wrong path, not a database, corrupt): one
    line naming the database and the cause, for the CLI and ``mss serve``."""


def database_name(url: str) -> str:
    """The file of a SQLite URL, else the URL without its password."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):] or ":memory:"
    return make_url(url).render_as_string(hide_password=True)


def unusable(url: str, exc: DBAPIError) -> DatabaseUnusable:
    """*exc* (raised by the driver) as one line: ``database PATH: cause``."""
    cause = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
    name = database_name(url)
    if url.startswith("sqlite:///") and not Path(name).parent.is_dir():
        cause += f" (directory {Path(name).parent} does not exist)"
    return DatabaseUnusable(f"database {name}: {cause}")
