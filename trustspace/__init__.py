"""Trust space: the national whitelist, policy decisions, PKI."""
