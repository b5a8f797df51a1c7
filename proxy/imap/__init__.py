"""IMAP4rev1 server (RFC 3501 and extensions) served from the encrypted store.

Module contract (kept so the protocol and content sides can be built apart):
``tokens`` (what the command parser produces), ``wire`` (IMAP string encoding),
``seqset`` and ``utf7`` (pure syntax), ``mime``/``fetch``/``search`` (message content).
The server: ``listeners`` (imap/imaps sockets), ``connection`` (one session: states, I/O,
timeouts, untagged updates, IDLE), ``parser`` (framing and tokens), ``commands`` (the table)
with ``session_commands``, ``mailbox_commands``, ``message_commands`` (handlers by state),
``args`` and ``names`` (arguments, mailbox names; the password check is ``mss.login``),
``cache`` (in-memory ENVELOPE cache). Storage is the mail store's (:mod:`mss.mailstore`:
folders, messages, grants, snapshots, wake-ups), reached through ``ServerContext.mailstore``
for its per-process state: this package only adapts the protocol to it.
"""
