"""SMTP listeners: MX (other operators), submission and submissions (professionals)."""
