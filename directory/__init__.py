"""Who exists: the synchronised professional directory and our published mailboxes.

Hosted mailboxes live in :mod:`mss.mailstore`; LDAP synchronisation and publication come with
the directory issue."""
