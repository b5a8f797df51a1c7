"""Audit trail: the event catalogue and the hash-chained journal (core), verification,
signed checkpoints, export (DICOM, FHIR) and shipping (services); docs/audit-events.md."""
