"""IMAP4rev1 server (RFC 3501 and extensions) served from the encrypted store.

Module contract (kept so the protocol and content sides can be built apart):
``tokens`` (what the command parser produces), ``wire`` (IMAP string encoding),
``seqset`` and ``utf7`` (pure syntax), ``mime``/``fetch``/``search`` (message content),
the rest (connection, commands, backend) is the server.
"""
