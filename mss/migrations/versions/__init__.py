"""The revisions, one linear chain from 0001 (tests/test_migrations.py checks one head)."""
