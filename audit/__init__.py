"""Audit trail: the event catalogue, the hash-chained journal, export (DICOM/FHIR) later."""
