"""Who exists: the synchronised professional directory and our published mailboxes.

:mod:`directory.sources` (the one interface of the sources: :mod:`directory.ldap_source`,
:mod:`directory.extraction`, the FHIR API), :mod:`directory.sync` (staged, validated,
swapped in one transaction, whatever the source), :mod:`directory.reconcile` (what one
source lists and another does not), :mod:`directory.lookup` (the SMTP-time check),
:mod:`directory.publish` (our mailboxes, handed in by the caller: the mail store owns
them); docs/directory.md."""
