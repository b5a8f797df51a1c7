"""IMAP4rev1 server (RFC 3501 and extensions) served from the encrypted store.

Module contract (kept so the protocol and content sides can be built apart):
``tokens`` (what the command parser produces), ``wire`` (IMAP string encoding),
``seqset`` and ``utf7`` (pure syntax), ``mime``/``fetch``/``search`` (message content).
The server: ``listeners`` (imap/imaps sockets), ``connection`` (one session: states, I/O,
timeouts, untagged updates, IDLE), ``parser`` (framing and tokens), ``commands`` (the table)
with ``session_commands``, ``mailbox_commands``, ``message_commands`` (handlers by state),
``args`` and ``names`` (arguments, mailbox names; the password check is ``mss.login``),
``backend`` (SQL reads and writes), ``grants`` (shared mailboxes), ``notifier`` (wake-ups),
``cache`` (in-memory ENVELOPE cache).
"""
