# mss: make run (install + start on ./var), make test (install test deps + run the suite)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MSS := $(VENV)/bin/mss
DATA ?= var
DEMO_DOMAIN ?= demo.mssante.fr
DEMO_MAILBOX ?= demo@$(DEMO_DOMAIN)
WHITELIST_DIR ?= ../shared/data/liste-blanche
# Debian packages the tests shell out to (installed with --no-install-recommends, so what a
# peer only recommends but the tests use is named too):
#   swaks + libnet-ssleay-perl (swaks --tls; only recommended), libio-socket-ssl-perl,
#   libauthen-sasl-perl (swaks AUTH mechanisms beyond PLAIN/LOGIN/CRAM);
#   slapd (+ its /etc/ldap/schema), ldap-utils (ldapsearch); rsyslog + rsyslog-gnutls (RFC 5425);
#   postfix; isync (mbsync) + libsasl2-modules (mbsync AuthMechs PLAIN, only recommended
#   by libsasl2-2); openssl and ca-certificates (TLS tooling the peers load);
#   postgresql (initdb/pg_ctl/pg_basebackup: clusters the fixtures start; postgresql-client
#   for psql, pg_dump); softhsm2 (a PKCS#11 token for the HSM key provider); curl (an IMAP
#   client logging in with app passwords, imap:// --ssl-reqd); chromium, chromium-driver and
#   a font (the portal's browser test: Playwright drives Debian's chromium).
DEBIAN_TEST_PACKAGES := swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl \
	rsyslog rsyslog-gnutls slapd ldap-utils isync libsasl2-modules postfix openssl ca-certificates \
	postgresql postgresql-client softhsm2 curl \
	chromium chromium-driver fonts-dejavu-core \
	prometheus  # issue 17: promtool checks config/prometheus-rules.yml (tests/test_metrics.py)
# issue 16: dovecot-imapd (with dovecot-core): the IMAP server a mailbox is migrated from and
# back with mbsync (tests/test_migration.py)
DEBIAN_TEST_PACKAGES += dovecot-imapd

.PHONY: run test lint install install-test system-deps oidc-provider bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test system-deps oidc-provider

# The OpenID Connect provider the token tests start (tests/oidc: npm oidc-provider, locked by
# package-lock.json); Debian's nodejs + npm when node is missing (installed when root).
oidc-provider: tests/oidc/node_modules/.installed
tests/oidc/node_modules/.installed: tests/oidc/package.json tests/oidc/package-lock.json
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends nodejs npm >/dev/null; \
	  else echo "note: not root, cannot install nodejs npm (token tests skip; fail under CI)"; fi; \
	fi
	if command -v npm >/dev/null; then cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; fi

# Debian packages of real peers used by the tests (installed when running as root).
system-deps:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else echo "note: not root, cannot install:$$missing (tests needing them skip; fail under CI)"; fi; \
	fi

run: $(VENV)/.installed
	@if [ ! -f $(DATA)/mss.toml ]; then \
	  set -e; \
	  $(MSS) init --data-dir $(DATA) --domain $(DEMO_DOMAIN); \
	  pw=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(12))'); \
	  echo "$$pw" | $(MSS) --config $(DATA)/mss.toml mailbox add $(DEMO_MAILBOX) --type PER \
	    --rpps 10000000001 --password-stdin; \
	  wl=$$(ls $(WHITELIST_DIR)/*.xml 2>/dev/null | sort | tail -n 1); \
	  if [ -n "$$wl" ]; then $(MSS) --config $(DATA)/mss.toml whitelist import "$$wl"; \
	  else echo "no national whitelist found under $(WHITELIST_DIR): remote domains refused"; fi; \
	  echo; echo "demo mailbox: $(DEMO_MAILBOX)   password: $$pw   (shown once; a new one: echo PASSWORD | bin/mss mailbox passwd $(DEMO_MAILBOX))"; echo; \
	fi
	$(MSS) --config $(DATA)/mss.toml db upgrade  # the demo node: its schema follows the code
	@echo "admin commands, from another terminal: bin/mss --help (export PATH=\"\$$PWD/bin:\$$PATH\": mss ...)"
	exec $(MSS) --config $(DATA)/mss.toml serve

test: install-test
	$(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check mss proxy trustspace directory audit tests bench
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/smtp_ingest.py --sessions 20 --messages 2000 --size-kb 5
	$(PY) bench/audit_overhead.py --messages 2000 --verify-records 1000000

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
