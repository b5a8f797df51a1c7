"""The audit event catalogue: every event kind mss emits, with its DICOM/IHE coding.

Each kind maps to a DICOM PS3.15 A.5 ``EventID`` (DCM code), an ``EventTypeCode`` (DCM when
one fits, else our own code system ``MSS``) and an ``EventActionCode`` (C create, R read,
U update, D delete, E execute). The action is the one PS3.15 A.5.3 fixes for the EventID:
Import C, Export R, Audit Log Used R, Security Alert, Application Activity, Network Entry and
User Authentication E; IMAP accesses to stored messages, which create, read, update and
delete, have their own EventID (``MSS-MAILBOX-ACCESS``). ``docs/audit-events.md`` lists
the same table; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from types import MappingProxyType


class Event(StrEnum):
    """Every event kind, one member per catalogue entry: records name their event with a
    member, so a misspelt event is a mypy error, not a runtime one."""

    SERVER_START = "server.start"
    SERVER_STOP = "server.stop"
    CONNECTION_REFUSED = "connection.refused"
    LIMIT_EXCEEDED = "limit.exceeded"  # issue 17: sending limits (mss/sending.py)
    SMTP_CONNECT = "smtp.connect"
    SMTP_TLS = "smtp.tls"
    SMTP_TIMEOUT = "smtp.timeout"
    SMTP_AUTH = "smtp.auth"
    SMTP_SENDER_REFUSED = "smtp.sender.refused"
    SMTP_RECIPIENT_REFUSED = "smtp.recipient.refused"
    SMTP_MESSAGE_REFUSED = "smtp.message.refused"
    SMTP_CERTIFICATE_FAIL_OPEN = "smtp.certificate.fail_open"
    SMTP_MESSAGE_ACCEPTED = "smtp.message.accepted"
    SMTP_DELEGATED = "smtp.delegated"  # issue 16: sent as a shared mailbox (grant --send)
    DELIVERY_LOCAL = "delivery.local"
    DELIVERY_QUEUED = "delivery.queued"
    QUEUE_DELIVERED = "queue.delivered"
    QUEUE_DEFERRED = "queue.deferred"
    QUEUE_BOUNCED = "queue.bounced"
    QUEUE_EXPIRED = "queue.expired"
    IMAP_LOGIN = "imap.login"
    IMAP_SELECT = "imap.select"
    IMAP_FETCH = "imap.fetch"
    IMAP_STORE_DELETED = "imap.store.deleted"
    IMAP_EXPUNGE = "imap.expunge"
    IMAP_MOVE = "imap.move"
    IMAP_COPY = "imap.copy"
    IMAP_APPEND = "imap.append"
    IMAP_FOLDER_CREATE = "imap.folder.create"
    IMAP_FOLDER_DELETE = "imap.folder.delete"
    IMAP_FOLDER_RENAME = "imap.folder.rename"
    IMAP_DELEGATED = "imap.delegated"
    STORE_TAMPERED = "store.tampered"
    DIRECTORY_SYNC = "directory.sync"
    DIRECTORY_PUBLISH = "directory.publish"
    ADMIN_INIT = "admin.init"
    ADMIN_DOMAIN_ADD = "admin.domain.add"
    ADMIN_MAILBOX_ADD = "admin.mailbox.add"
    ADMIN_MAILBOX_DISABLE = "admin.mailbox.disable"
    ADMIN_MAILBOX_GRANT = "admin.mailbox.grant"
    ADMIN_MAILBOX_REVOKE = "admin.mailbox.revoke"
    ADMIN_MAILBOX_CERT_BIND = "admin.mailbox.cert.bind"  # issue 15: SASL EXTERNAL
    ADMIN_MAILBOX_CERT_UNBIND = "admin.mailbox.cert.unbind"
    # issue 16, mailbox lifecycle (mss/lifecycle_cli.py, docs/lifecycle.md)
    ADMIN_MAILBOX_PASSWD = "admin.mailbox.passwd"
    ADMIN_MAILBOX_SUSPEND = "admin.mailbox.suspend"
    ADMIN_MAILBOX_RESUME = "admin.mailbox.resume"
    ADMIN_MAILBOX_ENABLE = "admin.mailbox.enable"
    ADMIN_MAILBOX_RENAME = "admin.mailbox.rename"
    ADMIN_MAILBOX_DELETE = "admin.mailbox.delete"
    ADMIN_MAILBOX_UNDELETE = "admin.mailbox.undelete"
    MAILBOX_PURGE = "mailbox.purge"
    ADMIN_DOMAIN_SUSPEND = "admin.domain.suspend"
    ADMIN_DOMAIN_RESUME = "admin.domain.resume"
    ADMIN_DOMAIN_REMOVE = "admin.domain.remove"
    # issue 15, app passwords (mss mailbox app-password)
    ADMIN_APP_PASSWORD_ADD = "admin.app_password.add"
    ADMIN_APP_PASSWORD_REVOKE = "admin.app_password.revoke"
    # issue 16, reversibility: operator accounts, mailbox export and import
    ADMIN_OPERATOR_ADD = "admin.operator.add"
    ADMIN_OPERATOR_REMOVE = "admin.operator.remove"
    ADMIN_MAILBOX_EXPORT = "admin.mailbox.export"
    ADMIN_MAILBOX_IMPORT = "admin.mailbox.import"
    ADMIN_KEYS_ROTATE = "admin.keys.rotate"
    ADMIN_KEYS_SHRED = "admin.keys.shred"
    ADMIN_KEYS_INIT_HSM = "admin.keys.init_hsm"
    ADMIN_DOMAIN_RELAY = "admin.domain.relay"
    ADMIN_RELAY_ADD = "admin.relay.add"
    ADMIN_RELAY_REMOVE = "admin.relay.remove"
    ADMIN_QUEUE_RETRY = "admin.queue.retry"
    ADMIN_QUEUE_PURGE = "admin.queue.purge"
    ADMIN_QUEUE_HOLD = "admin.queue.hold"  # issue 16: mss queue hold/release DOMAIN
    ADMIN_QUEUE_RELEASE = "admin.queue.release"
    ADMIN_SESSION_END = "admin.session.end"  # issue 16: mss sessions end
    ADMIN_BACKUP_CREATE = "admin.backup.create"
    ADMIN_BACKUP_RESTORE = "admin.backup.restore"
    ADMIN_DB_UPGRADE = "admin.db.upgrade"
    ADMIN_PKI_DEV_CERT = "admin.pki.dev_cert"  # issue 17: mss pki dev-cert
    # issue 16, retention and legal hold (mss/mailstore/retention.py, holds.py)
    ADMIN_MAILBOX_HOLD = "admin.mailbox.hold"
    ADMIN_MAILBOX_RELEASE = "admin.mailbox.release"
    RETENTION_EXPUNGE = "retention.expunge"
    ADMIN_PEER_BLOCK = "admin.peer.block"  # issue 16: local blocks (mss peer block)
    ADMIN_PEER_UNBLOCK = "admin.peer.unblock"
    WHITELIST_IMPORT = "whitelist.import"
    WHITELIST_FETCH = "whitelist.fetch"
    WHITELIST_ROLLBACK = "whitelist.rollback"
    AUDIT_READ = "audit.read"
    AUDIT_EXPORT = "audit.export"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_PURGE = "audit.purge"
    AUDIT_REVEAL_REQUEST = "audit.reveal.request"  # issue 18: mss audit reveal-request
    # the portal (proxy/portal, issue 15)
    PORTAL_LOGIN = "portal.login"
    PORTAL_LOGOUT = "portal.logout"
    PORTAL_APP_PASSWORD_CREATE = "portal.app_password.create"
    PORTAL_APP_PASSWORD_REVOKE = "portal.app_password.revoke"
    PORTAL_HISTORY_READ = "portal.history.read"
    PORTAL_REFUSED = "portal.refused"


class Outcome(IntEnum):
    """DICOM EventOutcomeIndicator."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # refused by policy, the request was well-formed
    SERIOUS_FAILURE = 8  # failed: bad input, authentication failure
    MAJOR_FAILURE = 12  # failed on our side: tampered ciphertext, internal error


@dataclass(frozen=True)
class Code:
    code: str
    system: str  # codeSystemName
    display: str


def own(code: str, display: str) -> Code:
    return Code(code, "MSS", display)


def dcm(code: str, display: str) -> Code:
    return Code(code, "DCM", display)


@dataclass(frozen=True)
class EventKind:
    name: Event
    event_id: Code
    type_code: Code
    action: str
    description: str


APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
AUDIT_LOG_USED = dcm("110101", "Audit Log Used")
EXPORT = dcm("110106", "Export")
IMPORT = dcm("110107", "Import")
NETWORK_ENTRY = dcm("110108", "Network Entry")
SECURITY_ALERT = dcm("110113", "Security Alert")
# PS3.15 A.5.3.7 fixes Import to C; mailbox reads, flags, moves and deletions are accesses to
# stored messages (the shape of A.5.3.4 "Instances Accessed", for mail): our own EventID
MAILBOX_ACCESS = own("MSS-MAILBOX-ACCESS", "Mailbox content accessed")
USER_AUTHENTICATION = dcm("110114", "User Authentication")


def _kinds(*kinds: EventKind) -> Mapping[Event, EventKind]:
    catalogue = {k.name: k for k in kinds}
    assert list(catalogue) == list(Event), "one catalogue entry per Event member, in order"
    return MappingProxyType(catalogue)


CATALOGUE: Mapping[Event, EventKind] = _kinds(
    # server life
    EventKind(Event.SERVER_START, APPLICATION_ACTIVITY, dcm("110120", "Application Start"), "E",
              "mss serve started its listeners"),
    EventKind(Event.SERVER_STOP, APPLICATION_ACTIVITY, dcm("110121", "Application Stop"), "E",
              "mss serve stopped"),
    # connections (every listener)
    EventKind(Event.CONNECTION_REFUSED, NETWORK_ENTRY,
              own("MSS-CONN-LIMIT", "Connection refused over a limit"), "E",
              "a connection over a listener's cap (reason names it: max_connections, "
              "max_connections_per_address, max_preauth, max_preauth_per_address, "
              "open_files) got 421 / BYE; one record per cap and limits.report_interval, "
              "detail.refused counts them"),
    EventKind(Event.LIMIT_EXCEEDED, SECURITY_ALERT,
              own("MSS-SEND-LIMIT", "Sending limit reached"), "E",
              "a mailbox or relay reached a sending limit (reason names it: messages, "
              "recipients, append_bytes; limits.sending): 451 4.7.1 / NO [LIMIT] until the "
              "window ends; one record per sender, limit and window across the cluster, "
              "detail: limit, window_start, window"),
    # SMTP sessions
    EventKind(Event.SMTP_CONNECT, NETWORK_ENTRY, dcm("110124", "Attach"), "E",
              "an SMTP client connected to a listener"),
    EventKind(Event.SMTP_TLS, NETWORK_ENTRY, own("MSS-SMTP-TLS", "TLS established"), "E",
              "STARTTLS or implicit TLS handshake done (protocol and cipher in detail)"),
    EventKind(Event.SMTP_TIMEOUT, NETWORK_ENTRY, own("MSS-SMTP-TIMEOUT", "Session timed out"), "E",
              "an SMTP session got 421 4.4.2 and was closed at a deadline (reason: "
              "preauth_timeout, session_timeout or data_timeout)"),
    EventKind(Event.SMTP_AUTH, USER_AUTHENTICATION, dcm("110122", "Login"), "E",
              "SMTP AUTH success (0), failure (8) or refusal while throttled or temporary "
              "(4) on submission and relay; detail: mechanism, method, and for tokens the "
              "issuer, subject, jti or token_tail, for certificates cert_dn, sha256 (never a "
              "secret)"),
    EventKind(Event.SMTP_SENDER_REFUSED, IMPORT, own("MSS-SENDER-REFUSED", "Sender refused"), "C",
              "MAIL FROM refused by policy (reason, its code in detail.check, and whitelist "
              "version recorded)"),
    EventKind(Event.SMTP_RECIPIENT_REFUSED, IMPORT,
              own("MSS-RCPT-REFUSED", "Recipient refused"), "C",
              "RCPT TO refused by policy (reason, its code in detail.check, and whitelist "
              "version recorded)"),
    EventKind(Event.SMTP_MESSAGE_REFUSED, IMPORT,
              own("MSS-MSG-REFUSED", "Message refused"), "C",
              "DATA refused: too large, bare CR/LF, long line, From:/Sender: not allowed "
              "for the login or invalid (submission, relay), storage failure"),
    EventKind(Event.SMTP_CERTIFICATE_FAIL_OPEN, SECURITY_ALERT,
              own("MSS-CRL-FAIL-OPEN", "Certificate accepted without revocation status"), "E",
              "a client certificate was accepted with no current CRL, because pki."
              "crl_unavailable = fail-open (fail-closed answers 454 and audits "
              "smtp.sender.refused)"),
    EventKind(Event.SMTP_MESSAGE_ACCEPTED, IMPORT, own("MSS-MSG-ACCEPTED", "Message accepted"), "C",
              "a message was accepted (250) for all its valid recipients"),
    EventKind(Event.SMTP_DELEGATED, IMPORT, own("MSS-SMTP-DELEGATED", "Sent on behalf"), "C",
              "a grantee submitted a message as a shared ORG/APP mailbox through a grant "
              "with the send right (actor the grantee, mailbox the shared one; Sender: the "
              "grantee, sender_added when mss added it), in the message's transaction"),
    EventKind(Event.DELIVERY_LOCAL, IMPORT, own("MSS-DELIVER-LOCAL", "Local delivery"), "C",
              "a message copy was stored, encrypted, in a hosted mailbox"),
    EventKind(Event.DELIVERY_QUEUED, EXPORT, own("MSS-QUEUED", "Queued for an operator"), "R",
              "a message copy was queued, encrypted, for a whitelisted remote domain"),
    # outbound queue (proxy/outbound)
    EventKind(Event.QUEUE_DELIVERED, EXPORT, own("MSS-QUEUE-DELIVERED", "Delivered to a peer"), "R",
              "a queued copy was accepted (250) by the peer operator or next hop (host, its "
              "certificate DN and the message's patient pseudonym in detail)"),
    EventKind(Event.QUEUE_DEFERRED, EXPORT, own("MSS-QUEUE-DEFERRED", "Delivery deferred"), "R",
              "a delivery attempt failed temporarily; retried later (reason, remote reply)"),
    EventKind(Event.QUEUE_BOUNCED, EXPORT, own("MSS-QUEUE-BOUNCED", "Delivery failed"), "R",
              "a queued copy failed permanently (5xx, null MX) or was bounced by an operator;"
              " DSN to the sender, local or queued"),
    EventKind(Event.QUEUE_EXPIRED, EXPORT, own("MSS-QUEUE-EXPIRED", "Delivery expired"), "R",
              "a queued copy used up its attempts or max age; DSN to the sender, local or "
              "queued"),
    # IMAP sessions (proxy/imap); never content: store ids, UIDs, folder ids (a name is content)
    EventKind(Event.IMAP_LOGIN, USER_AUTHENTICATION, dcm("110122", "Login"), "E",
              "IMAP LOGIN/AUTHENTICATE success (0), failure (8) or refusal while throttled "
              "or temporary (4); detail as smtp.auth"),
    EventKind(Event.IMAP_SELECT, MAILBOX_ACCESS, own("MSS-IMAP-SELECT", "Folder opened"), "R",
              "SELECT or EXAMINE of a folder (read-only flag and delegation in detail)"),
    EventKind(Event.IMAP_FETCH, MAILBOX_ACCESS, own("MSS-IMAP-FETCH", "Message content read"), "R",
              "a FETCH returned header or body content ([uid, store id] of each message)"),
    EventKind(Event.IMAP_STORE_DELETED, MAILBOX_ACCESS,
              own("MSS-IMAP-DELETED", "Marked deleted"), "U",
              "STORE set the \\Deleted flag (UIDs in detail)"),
    EventKind(Event.IMAP_EXPUNGE, MAILBOX_ACCESS, own("MSS-IMAP-EXPUNGE", "Messages expunged"), "D",
              "EXPUNGE, UID EXPUNGE or CLOSE removed messages ([uid, store id] in detail)"),
    EventKind(Event.IMAP_MOVE, MAILBOX_ACCESS, own("MSS-IMAP-MOVE", "Messages moved"), "U",
              "MOVE of messages to another folder (source and destination in detail)"),
    EventKind(Event.IMAP_COPY, MAILBOX_ACCESS, own("MSS-IMAP-COPY", "Messages copied"), "C",
              "COPY of messages to another folder (re-encrypted for the destination)"),
    EventKind(Event.IMAP_APPEND, MAILBOX_ACCESS, own("MSS-IMAP-APPEND", "Message appended"), "C",
              "APPEND stored a message, encrypted (store id, uid and size in detail)"),
    EventKind(Event.IMAP_FOLDER_CREATE, MAILBOX_ACCESS,
              own("MSS-IMAP-FOLDER", "Folder changed"), "C",
              "CREATE of a folder"),
    EventKind(Event.IMAP_FOLDER_DELETE, MAILBOX_ACCESS,
              own("MSS-IMAP-FOLDER", "Folder changed"), "D",
              "DELETE of a folder and its messages"),
    EventKind(Event.IMAP_FOLDER_RENAME, MAILBOX_ACCESS,
              own("MSS-IMAP-FOLDER", "Folder changed"), "U",
              "RENAME of a folder"),
    EventKind(Event.IMAP_DELEGATED, MAILBOX_ACCESS,
              own("MSS-IMAP-DELEGATED", "Delegated access"), "R",
              "a user reached a mailbox shared with them (mss mailbox grant); command in detail"),
    EventKind(Event.STORE_TAMPERED, SECURITY_ALERT, own("MSS-TAMPERED", "Ciphertext tampered"), "E",
              "a stored ciphertext failed authentication; it was not served"),
    # directory
    EventKind(Event.DIRECTORY_SYNC, IMPORT,
              own("MSS-DIRECTORY-SYNC", "Directory synchronised"), "C",
              "a directory sync run ended (counts in detail) or failed (8, last good kept)"),
    EventKind(Event.DIRECTORY_PUBLISH, EXPORT, own("MSS-DIRECTORY-PUBLISH", "Mailboxes published"),
              "R", "our mailboxes were published to the directory (counts in detail); over FHIR "
              "one record per PATCH: mailbox, action, HTTP status (4: 404/412/422)"),
    # administration (mss CLI)
    EventKind(Event.ADMIN_INIT, SECURITY_ALERT, dcm("110131", "Software Configuration"), "E",
              "mss init created a data dir, keys and development PKI"),
    EventKind(Event.ADMIN_DOMAIN_ADD, SECURITY_ALERT, dcm("110128", "Network Configuration"), "E",
              "a hosted domain was added"),
    EventKind(Event.ADMIN_MAILBOX_ADD, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox was created"),
    EventKind(Event.ADMIN_MAILBOX_DISABLE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox was disabled"),
    EventKind(Event.ADMIN_MAILBOX_GRANT, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an ORG/APP mailbox was shared with a user over IMAP (grantee in detail)"),
    EventKind(Event.ADMIN_MAILBOX_REVOKE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a user's access to a shared mailbox was removed (grantee in detail)"),
    EventKind(Event.ADMIN_MAILBOX_CERT_BIND, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a client certificate subject DN was bound to an APP mailbox (SASL EXTERNAL; "
              "cert_dn in detail)"),
    EventKind(Event.ADMIN_MAILBOX_CERT_UNBIND, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a client certificate subject DN was unbound from its mailbox (cert_dn in "
              "detail)"),
    EventKind(Event.ADMIN_MAILBOX_PASSWD, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox's password was replaced (or removed: --no-password); its sessions "
              "ended (never the password)"),
    EventKind(Event.ADMIN_MAILBOX_SUSPEND, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox was suspended: logins refused, sessions ended, inbound mail deferred "
              "or kept (lifecycle.suspended_inbound in detail)"),
    EventKind(Event.ADMIN_MAILBOX_RESUME, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a suspended mailbox was resumed"),
    EventKind(Event.ADMIN_MAILBOX_ENABLE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a disabled mailbox was enabled again"),
    EventKind(Event.ADMIN_MAILBOX_RENAME, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox was given another address (the old one in mailbox, the new one in "
              "detail); its sessions ended"),
    EventKind(Event.ADMIN_MAILBOX_DELETE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox's deletion was scheduled (delete_after in detail; --now: at once); "
              "logins refused, sessions ended, inbound mail refused as unknown"),
    EventKind(Event.ADMIN_MAILBOX_UNDELETE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a scheduled deletion was cancelled during its grace period"),
    EventKind(Event.MAILBOX_PURGE, SECURITY_ALERT, dcm("110129", "Security Configuration"), "E",
              "a deleted mailbox was purged: its rows removed and its key destroyed "
              "(crypto-shredding); counts in detail, never content"),
    EventKind(Event.ADMIN_DOMAIN_SUSPEND, SECURITY_ALERT,
              dcm("110128", "Network Configuration"), "E",
              "a hosted domain was suspended: its mailboxes as suspended"),
    EventKind(Event.ADMIN_DOMAIN_RESUME, SECURITY_ALERT,
              dcm("110128", "Network Configuration"), "E",
              "a suspended domain was resumed"),
    EventKind(Event.ADMIN_DOMAIN_REMOVE, SECURITY_ALERT,
              dcm("110128", "Network Configuration"), "E",
              "a hosted domain without mailboxes was removed"),
    EventKind(Event.ADMIN_APP_PASSWORD_ADD, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "the operator made an app password for a mailbox (id, label, scopes in detail; "
              "never the secret)"),
    EventKind(Event.ADMIN_APP_PASSWORD_REVOKE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "the operator revoked an app password of a mailbox (id, label in detail)"),
    EventKind(Event.ADMIN_OPERATOR_ADD, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an operator account was made (mss operator add): it may log in over IMAP as "
              "any mailbox, each use audited as imap.delegated (name in detail)"),
    EventKind(Event.ADMIN_OPERATOR_REMOVE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an operator account was removed (name in detail)"),
    EventKind(Event.ADMIN_MAILBOX_EXPORT, EXPORT,
              own("MSS-MAILBOX-EXPORT", "Mailbox exported"), "R",
              "a mailbox was exported to an archive encrypted to the recipients given "
              "(format, counts, bytes and recipients in detail), or the export failed (8)"),
    EventKind(Event.ADMIN_MAILBOX_IMPORT, IMPORT,
              own("MSS-MAILBOX-IMPORT", "Mailbox imported"), "C",
              "messages were imported into a mailbox from an mbox, a Maildir or an "
              "encrypted archive (format, counts in detail), or the import was refused (8, "
              "nothing imported)"),
    EventKind(Event.ADMIN_KEYS_ROTATE, SECURITY_ALERT, dcm("110129", "Security Configuration"), "E",
              "a new master key version was added and mailbox keys re-wrapped"),
    EventKind(Event.ADMIN_KEYS_SHRED, SECURITY_ALERT, dcm("110129", "Security Configuration"), "E",
              "a mailbox's key was destroyed (crypto-shredding: its mail is unreadable, "
              "also in older copies of the database: the key-encryption key moved to the "
              "generation in detail, the older one erased) and the mailbox disabled"),
    EventKind(Event.ADMIN_KEYS_INIT_HSM, SECURITY_ALERT, dcm("110129", "Security Configuration"),
              "E", "the key-encryption key was generated in the PKCS#11 token (label in "
              "detail)"),
    EventKind(Event.ADMIN_DOMAIN_RELAY, SECURITY_ALERT, dcm("110128", "Network Configuration"), "E",
              "a hosted domain's next hop (relay_to) was set: its mail goes to that server"),
    EventKind(Event.ADMIN_RELAY_ADD, SECURITY_ALERT, dcm("110128", "Network Configuration"), "E",
              "an institution's mail server was allowed on the relay listener (name, method, "
              "domains)"),
    EventKind(Event.ADMIN_RELAY_REMOVE, SECURITY_ALERT, dcm("110128", "Network Configuration"),
              "E", "a relay was removed: its server may no longer send"),
    EventKind(Event.ADMIN_QUEUE_RETRY, SECURITY_ALERT, own("MSS-QUEUE-ADMIN", "Queue changed"), "E",
              "an operator made queued rows due now or re-queued bounced/expired ones"),
    EventKind(Event.ADMIN_QUEUE_PURGE, SECURITY_ALERT, own("MSS-QUEUE-ADMIN", "Queue changed"), "E",
              "an operator deleted delivered or bounced/expired rows (count in detail)"),
    EventKind(Event.ADMIN_QUEUE_HOLD, SECURITY_ALERT, own("MSS-QUEUE-ADMIN", "Queue changed"), "E",
              "an operator held the delivery of a domain's queued rows (domain, reason, "
              "rows in detail)"),
    EventKind(Event.ADMIN_QUEUE_RELEASE, SECURITY_ALERT, own("MSS-QUEUE-ADMIN", "Queue changed"),
              "E", "an operator released a held domain: its rows are due now (domain, rows, "
              "seconds held in detail)"),
    EventKind(Event.ADMIN_SESSION_END, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an operator ended a client session (its id, node, protocol in detail) or "
              "every session of a mailbox (count in detail)"),
    # PS3.15 A.5.3: Export is R, Import is C; what is copied is ciphertext only
    EventKind(Event.ADMIN_BACKUP_CREATE, EXPORT, own("MSS-BACKUP", "Backup taken"), "R",
              "mss backup create copied the database (ciphertext and wrapped keys, no key "
              "file) into a backup directory (audit head and counts in detail) or failed (8)"),
    EventKind(Event.ADMIN_BACKUP_RESTORE, IMPORT, own("MSS-RESTORE", "Backup restored"), "C",
              "mss backup restore put a verified backup into this node's empty database "
              "(the backup's time, audit head and counts in detail)"),
    EventKind(Event.ADMIN_DB_UPGRADE, SECURITY_ALERT, dcm("110131", "Software Configuration"),
              "E", "the database schema was upgraded (mss db upgrade: revisions from and to "
              "in detail)"),
    EventKind(Event.ADMIN_PKI_DEV_CERT, SECURITY_ALERT,
              dcm("110129", "Security Configuration"), "E",
              "mss pki dev-cert reissued the development server certificate (its names, "
              "serial and the backup file in detail; the key unchanged)"),
    EventKind(Event.ADMIN_MAILBOX_HOLD, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox was put under legal hold (reason in detail): no expunge, retention, "
              "deletion nor key shredding until released; or the hold was refused (8)"),
    EventKind(Event.ADMIN_MAILBOX_RELEASE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "a mailbox's legal hold was released (since when and its reason in detail); "
              "or the release was refused (8)"),
    EventKind(Event.RETENTION_EXPUNGE, MAILBOX_ACCESS,
              own("MSS-RETENTION", "Messages expired"), "D",
              "a retention rule expunged a folder's expired messages (folder id, special-use "
              "attribute, rule index, days, cutoff, messages and bytes in detail: counts, "
              "never a folder name)"),
    EventKind(Event.ADMIN_PEER_BLOCK, SECURITY_ALERT, dcm("110129", "Security Configuration"),
              "E", "a peer domain or operator certificate DN was blocked locally, on top of "
              "the whitelist (block id, domain or cert_dn, until, reason in detail); refusals "
              "it causes carry check peer_blocked"),
    EventKind(Event.ADMIN_PEER_UNBLOCK, SECURITY_ALERT, dcm("110129", "Security Configuration"),
              "E", "a local peer block was ended (block id, target and the queued rows "
              "released in detail)"),
    EventKind(Event.WHITELIST_IMPORT, SECURITY_ALERT, dcm("110129", "Security Configuration"), "E",
              "a whitelist version was imported (0) or an import refused (4/8)"),
    EventKind(Event.WHITELIST_FETCH, SECURITY_ALERT, dcm("110129", "Security Configuration"), "E",
              "the published whitelist was fetched: not modified, unchanged or imported (0), "
              "or the refresh failed (8: HTTP error, checksum mismatch, import refused)"),
    EventKind(Event.WHITELIST_ROLLBACK, SECURITY_ALERT, dcm("110129", "Security Configuration"),
              "E", "an older whitelist version was put back in force, the one in force "
              "withdrawn (0), or the rollback refused (4: unknown version, already in force, "
              "shrink guard)"),
    EventKind(Event.AUDIT_READ, AUDIT_LOG_USED, own("MSS-AUDIT-READ", "Audit trail read"), "R",
              "an operator listed the audit trail"),
    EventKind(Event.AUDIT_EXPORT, AUDIT_LOG_USED, own("MSS-AUDIT-EXPORT", "Audit trail exported"),
              "R", "an operator exported the audit trail (format, time window and rows in "
              "detail)"),
    EventKind(Event.AUDIT_CHECKPOINT, AUDIT_LOG_USED,
              own("MSS-AUDIT-CHECKPOINT", "Audit trail checkpoint signed"), "R",
              "a signed checkpoint of the chain (sequence, record, count, previous checkpoint "
              "hash, signature in detail), shipped so that a witness can show a cut tail"),
    EventKind(Event.AUDIT_PURGE, SECURITY_ALERT, own("MSS-AUDIT-PURGE", "Audit trail purged"), "E",
              "records older than the retention period were deleted after a checkpoint"),
    EventKind(Event.AUDIT_REVEAL_REQUEST, AUDIT_LOG_USED,
              own("MSS-AUDIT-REVEAL-REQUEST", "Pseudonym reveal requested"), "R",
              "an operator asked the trusted third party to reveal a patient pseudonym "
              "(pseudonym, reason, request id and sealed values exported in detail; 4: "
              "nothing sealed for it)"),
    # the portal (proxy/portal): one record per mailbox of the person, so that each
    # mailbox's access history shows it; never a token, a code or a secret
    EventKind(Event.PORTAL_LOGIN, USER_AUTHENTICATION, dcm("110122", "Login"), "E",
              "a professional logged in to the portal through the OIDC issuer (issuer, "
              "subject in detail) (0), or the login failed (8: state, code exchange, ID "
              "token, no mailbox; reason)"),
    EventKind(Event.PORTAL_LOGOUT, USER_AUTHENTICATION, dcm("110123", "Logout"), "E",
              "a portal session ended by logout"),
    EventKind(Event.PORTAL_APP_PASSWORD_CREATE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an app password was created in the portal (its id and scopes in detail, "
              "never the secret)"),
    EventKind(Event.PORTAL_APP_PASSWORD_REVOKE, SECURITY_ALERT,
              dcm("110137", "User security Attributes Changed"), "E",
              "an app password was revoked in the portal (its id in detail)"),
    EventKind(Event.PORTAL_HISTORY_READ, AUDIT_LOG_USED,
              own("MSS-PORTAL-HISTORY", "Access history read"), "R",
              "a professional read their mailbox's access history in the portal"),
    EventKind(Event.PORTAL_REFUSED, SECURITY_ALERT,
              own("MSS-PORTAL-REFUSED", "Portal request refused"), "E",
              "a portal request was refused: missing or wrong CSRF token, foreign Origin, a "
              "mailbox or app password not the session's (reason, path)"),
)


_BY_VALUE: Mapping[str, EventKind] = MappingProxyType(
    {str(event): k for event, k in CATALOGUE.items()})


def kind(name: str) -> EventKind:
    """The catalogue entry of *name* (an Event, or its value read back from the journal)."""
    found = _BY_VALUE.get(name)  # an Event is a str: the same key as its value
    if found is None:
        raise ValueError(f"audit event {name!r} is not in the catalogue")
    return found


def catalogue_table() -> str:
    """The Markdown table of ``docs/audit-events.md`` (a test keeps the doc equal to it)."""
    lines = ["| event | EventID | EventTypeCode | action | when |",
             "|---|---|---|---|---|"]
    for k in CATALOGUE.values():
        lines.append(
            f"| `{k.name}` | {k.event_id.code} {k.event_id.display} | "
            f"{k.type_code.system} {k.type_code.code} {k.type_code.display} | {k.action} | "
            f"{k.description} |")
    return "\n".join(lines) + "\n"


DOC = "docs/audit-events.md"


def write_table(path: str = DOC) -> None:
    """Replace the catalogue table in the document at *path*, keeping the rest of it."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| event | EventID"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    text = "\n".join(lines[:start]) + "\n" + catalogue_table() + "\n".join(lines[end:])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--write"] and len(sys.argv) <= 3:
        write_table(*sys.argv[2:])  # python -m audit.events --write [docs/audit-events.md]
    else:
        print(catalogue_table(), end="")
