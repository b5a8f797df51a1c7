"""Who exists: the synchronised professional directory and our published mailboxes.

:mod:`directory.sync` (paged LDAP search, staged, swapped in one transaction),
:mod:`directory.lookup` (the SMTP-time check), :mod:`directory.publish` (our mailboxes,
handed in by the caller: the mail store owns them); docs/directory.md."""
