"""The Annuaire Santé FHIR API (v2) as a directory source, and its HTTP client.

Each MSSanté mailbox is a ``telecom`` (FR Core ContactPoint, profile ``as-mailbox-mss`` of
the ANS Annuaire IG, ans.fhir.fr.annuaire) of a Practitioner, PractitionerRole or
Organization: ``system = email``, the FR Core extension ``fr-core-contact-point-email-type``
with code ``MSSANTE`` (TRE_R256), and the complex extension ``as-ext-mailbox-mss-metadata``
(``type`` from TRE_R257: PER | ORG | APP | CAB, ``listeRouge``, ``description``, ``service``,
``responsible``, ``phone``). Searchsets are read page by page following
``link[relation=next]`` (FHIR R4 §3.1.1.5 paging: never the whole result in memory); an
incremental run asks ``_lastUpdated=gt<mark>``. 429 and 5xx answers are retried after the
server's Retry-After (RFC 9110 §10.2.3) or an exponential backoff, a bounded number of
times; the API key travels in the ``ESANTE-API-KEY`` header only, to the configured origin
only, and is never logged. docs/directory-fhir.md cites the IG.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from directory.sources import Rejected, Row, SyncError
from mss.config import ConfigError, FhirConfig

# ans.fhir.fr.annuaire, StructureDefinition as-ext-mailbox-mss-metadata (context ContactPoint)
MSS_METADATA = ("https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/"
                "as-ext-mailbox-mss-metadata")
# hl7.fhir.fr.core, the type of an email ContactPoint (valueCoding from TRE_R256)
EMAIL_TYPE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-contact-point-email-type"
TRE_R256 = "https://mos.esante.gouv.fr/NOS/TRE_R256-TypeMessagerie/FHIR/TRE-R256-TypeMessagerie"
TRE_R257 = "https://mos.esante.gouv.fr/NOS/TRE_R257-TypeBAL/FHIR/TRE-R257-TypeBAL"
MAILBOX_TYPES = ("PER", "ORG", "APP", "CAB")  # TRE_R257-TypeBAL
ID_NAT_PS = "urn:oid:1.2.250.1.71.4.2.1"  # idNatPs: "8" + RPPS (IG examples)
ID_NAT_STRUCT = "urn:oid:1.2.250.1.71.4.2.2"  # idNatSt: "1" + FINESS, "3" + SIRET...
RESOURCES = ("Practitioner", "PractitionerRole", "Organization")
API_KEY_HEADER = "ESANTE-API-KEY"
FHIR_JSON = "application/fhir+json"
SKEW_MARGIN = 5  # seconds: as directory.sync, a change in the run's last seconds is re-read
MAX_BODY = 64 * 1024 * 1024  # one page of 1 000 resources is ~2 MB: refuse a runaway answer
Progress = Callable[[int], None]


def api_key(config: FhirConfig) -> str | None:
    """The API key from [directory.fhir] api_key_env or api_key_file (never from the TOML)."""
    if config.api_key_env:
        value = os.environ.get(config.api_key_env)
        if value is None:
            raise ConfigError(f"config: directory.fhir.api_key_env: ${config.api_key_env} "
                              "is not set")
        return value.strip()
    if config.api_key_file:
        try:
            return config.api_key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"config: directory.fhir.api_key_file: {exc.strerror}") from None
    return None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class FhirClient:
    """One keep-alive HTTPS connection to the API's origin, TLS verified (chain against
    ca_file or the system store, host name checked), requests retried on 429/5xx."""

    def __init__(self, config: FhirConfig, key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.key = key
        self.sleep = sleep
        base = urllib.parse.urlsplit(config.base_url.rstrip("/"))
        if base.scheme != "https" or not base.hostname:
            raise ConfigError("config: directory.fhir.base_url: an https:// URL is required")
        self.base = base
        self.origin = (base.hostname, base.port or 443)
        self.context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file else None)  # check_hostname on
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._conn: http.client.HTTPSConnection | None = None
        self.requests = 0
        self.retried = 0

    @property
    def label(self) -> str:
        return urllib.parse.urlunsplit(self.base)

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        text = self.label + "/" + path.lstrip("/")
        return text + ("?" + urllib.parse.urlencode(query, safe=",:") if query else "")

    def _target(self, url: str) -> str:
        """The request target of *url*, which must be on the configured origin: a next link
        elsewhere would receive the API key."""
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port or 443) != ("https", *self.origin):
            raise SyncError(f"the FHIR API pointed to another origin ({parts.scheme}://"
                            f"{parts.hostname}): refused, the API key goes only to "
                            f"{self.label}")
        return parts.path + ("?" + parts.query if parts.query else "")

    def connect(self) -> None:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.origin[0], self.origin[1], timeout=self.config.timeout,
                context=self.context)
            try:
                self._conn.connect()
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise SyncError(f"{self.label}: certificate not trusted "
                                f"({exc.verify_message})") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _once(self, method: str, target: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.connect()
        assert self._conn is not None
        self.requests += 1
        self._conn.request(method, target, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            self.close()
            raise SyncError(f"{self.label}: an answer over {MAX_BODY} bytes, refused")
        if response.will_close:
            self.close()
        return response.status, response.headers, data

    def send(self, method: str, url: str, body: Any = None, content_type: str = FHIR_JSON,
             *, idempotent: bool | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or None). 429 and 5xx are retried (after Retry-After, else
        retry_wait doubled each time, at most retry_max_wait), then the last answer is
        returned. A broken connection (a kept-alive one the server closed while idle,
        typically) is retried the same way when the request is idempotent (GET; the
        caller says so of a PATCH whose operations are, RFC 9110 §9.2.2), else it ends the
        run (SyncError)."""
        if idempotent is None:
            idempotent = method == "GET"
        target = self._target(url)
        headers = {"Accept": FHIR_JSON, "User-Agent": "mss-directory"}
        if self.key:
            headers[API_KEY_HEADER] = self.key
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = content_type
        cfg = self.config
        for attempt in range(cfg.retries + 1):
            last = attempt == cfg.retries
            try:
                status, answer_headers, raw = self._once(method, target, data, headers)
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise SyncError(f"{self.label}: certificate not trusted "
                                f"({exc.verify_message})") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if last or not idempotent:
                    raise SyncError(f"{self.label}: {type(exc).__name__}: {exc}") from None
                self.retried += 1
                self.sleep(min(cfg.retry_max_wait, cfg.retry_wait * 2 ** attempt))
                continue
            if (status == 429 or status >= 500) and not last:
                self.retried += 1
                wait = retry_after(answer_headers.get("Retry-After"))
                if wait is None:
                    wait = cfg.retry_wait * 2 ** attempt
                self.sleep(min(cfg.retry_max_wait, wait))
                continue
            try:
                return status, json.loads(raw) if raw.strip() else None
            except ValueError:
                return status, None
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, url: str) -> dict[str, Any]:
        status, doc = self.send("GET", url)
        if status != 200 or not isinstance(doc, dict):
            raise SyncError(f"{self.label}: GET answered {status}{_issue(doc)}")
        return doc


def _issue(doc: Any) -> str:
    """The first OperationOutcome issue's text, for a one-line error."""
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        for issue in doc.get("issue") or []:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
            if text:
                return f": {str(text)[:200]}"
    return ""


# ---------------------------------------------------------------------------- mapping
def _ext(items: list[dict[str, Any]] | None, url: str) -> dict[str, Any] | None:
    for item in items or ():
        if item.get("url") == url:
            return item
    return None


def is_mss(telecom: dict[str, Any]) -> bool:
    """An MSSanté mailbox: system email and the email-type extension coded MSSANTE."""
    if telecom.get("system") != "email":
        return False
    kind = _ext(telecom.get("extension"), EMAIL_TYPE)
    return bool(kind and (kind.get("valueCoding") or {}).get("code") == "MSSANTE")


def metadata(telecom: dict[str, Any]) -> dict[str, Any]:
    """as-ext-mailbox-mss-metadata as a flat dict (type, listeRouge, description, service,
    responsible, phone: those present)."""
    ext = _ext(telecom.get("extension"), MSS_METADATA)
    out: dict[str, Any] = {}
    for part in (ext or {}).get("extension") or ():
        name = part.get("url")
        if name == "type":
            codings = (part.get("valueCodeableConcept") or {}).get("coding") or []
            out["type"] = next((c.get("code") for c in codings if c.get("code")), None)
        elif name == "listeRouge":
            out["listeRouge"] = part.get("valueBoolean") is True
        elif name in ("description", "service", "responsible", "phone"):
            out[name] = part.get("valueString")
    return out


def _identifier(resource: dict[str, Any] | None, system: str) -> str | None:
    for ident in (resource or {}).get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _ref_identifier(reference: dict[str, Any] | None, system: str) -> str | None:
    ident = (reference or {}).get("identifier") or {}
    return str(ident["value"]) if ident.get("system") == system and ident.get("value") \
        else None


def _profession(resource: dict[str, Any]) -> str | None:
    concepts = [q.get("code") or {} for q in resource.get("qualification") or ()]
    concepts += resource.get("code") or []  # PractitionerRole.code
    for concept in concepts:
        for coding in concept.get("coding") or ():
            if "ProfessionSante" in str(coding.get("system")):
                label = coding.get("display") or coding.get("code")
                return str(label) if label else None
    return None


def _names(resource: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(display name, given name, surname)."""
    kind = resource.get("resourceType")
    if kind == "Organization":
        return resource.get("name"), None, None
    if kind == "PractitionerRole":
        return (resource.get("practitioner") or {}).get("display"), None, None
    names = resource.get("name") or []
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = " ".join(name.get("given") or []) or None
    family = name.get("family")
    text = name.get("text") or " ".join(p for p in (given, family) if p) or None
    return text, given, family


def resource_rows(resource: dict[str, Any]) -> Iterator[Row | Rejected]:
    """The directory rows of one resource's MSSanté telecoms (an inactive resource: none)."""
    kind, rid = resource.get("resourceType"), resource.get("id")
    where = f"{kind}/{rid}"
    if kind not in RESOURCES or not rid:
        yield Rejected(where, "not a Practitioner, PractitionerRole or Organization with an id")
        return
    if resource.get("active") is False:
        return
    display, given, family = _names(resource)
    if kind == "Practitioner":
        id_nat, structure = _identifier(resource, ID_NAT_PS), None
    elif kind == "Organization":
        id_nat = structure = _identifier(resource, ID_NAT_STRUCT)
    else:
        id_nat = _ref_identifier(resource.get("practitioner"), ID_NAT_PS)
        structure = _ref_identifier(resource.get("organization"), ID_NAT_STRUCT)
    addresses = resource.get("address") or []
    city = addresses[0].get("city") if kind == "Organization" and addresses else None
    profession = _profession(resource)
    for telecom in resource.get("telecom") or ():
        if not isinstance(telecom, dict) or not is_mss(telecom):
            continue
        value = str(telecom.get("value") or "").strip().lower()
        if not value:
            yield Rejected(where, "an MSSanté telecom without value")
            continue
        meta = metadata(telecom)
        yield {"dn": f"fhir:{where}#{value}", "mail": value, "type": meta.get("type"),
               "id_nat": id_nat, "display_name": display, "given_name": given,
               "surname": family, "profession": profession, "structure_id": structure,
               "service": meta.get("service"), "city": city,
               "liste_rouge": bool(meta.get("listeRouge"))}


def _instant(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def mark(when: dt.datetime) -> str:
    """A _lastUpdated mark: UTC, to the second (rounded down: a change in that second is
    read again, never missed)."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- the source
class FhirSource:
    """directory.sources.Source over the FHIR API: one searchset per resource type."""

    name = "fhir"
    incremental = True

    def __init__(self, config: FhirConfig, progress: Progress | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.progress = progress
        self.client = FhirClient(config, api_key(config), sleep)
        self.newest: dt.datetime | None = None
        self.read = 0  # rows and rejects yielded
        self.pages = 0
        self.same_holder = 0  # mailboxes met again on another resource of the same holder
        # incremental runs: the resources that changed ("fhir:<Type>/<id>#", the prefix of
        # their rows' dn), so the sync can drop their mailboxes that are gone at once
        self.holders: set[str] = set()

    def open(self) -> str:
        self.client.connect()  # TLS verified now: a wrong server fails before any request
        return self.client.label

    def search_url(self, kind: str, since: str | None) -> str:
        """A full run asks for the resources holding a mailbox (``mailbox-mss-type``, any
        TRE_R257 type); an incremental one for every resource changed after the mark,
        mailbox or not: one whose last mailbox was removed matches no mailbox search, and
        its holder prefix in :attr:`holders` is how the sync learns the mailbox is gone."""
        query = {"_count": str(self.config.page_size)}
        if since:
            query["_lastUpdated"] = f"gt{since}"
        else:
            query["mailbox-mss-type"] = ",".join(MAILBOX_TYPES)
        return self.client.url(kind, query)

    def rows(self, since: str | None) -> Iterator[Row | Rejected]:
        """Every mailbox once: one met again on another resource with the same idNat (a
        PER mailbox on the Practitioner and on its PractitionerRole) is yielded the first
        time only (Practitioner first); with another idNat it is yielded again and the
        sync's duplicate check rejects both, as for LDAP. The check keeps two hashes per
        mailbox (~100 bytes), not the rows."""
        self.holders = set()  # this run's: the source object lives as long as mss serve
        if since and self.newest is None:
            self.newest = _instant(since.replace("Z", "+00:00"))  # nothing newer: kept
        holder_of: dict[int, int] = {}
        for kind in self.config.resources:
            url: str | None = self.search_url(kind, since)
            while url:
                bundle = self.client.get(url)
                if bundle.get("resourceType") != "Bundle":
                    raise SyncError(f"{self.client.label}: a search answered a "
                                    f"{bundle.get('resourceType')}, not a Bundle")
                self.pages += 1
                for entry in bundle.get("entry") or ():
                    if (entry.get("search") or {}).get("mode", "match") != "match":
                        continue  # _include'd resources: not results
                    resource = entry.get("resource") or {}
                    stamp = _instant((resource.get("meta") or {}).get("lastUpdated"))
                    if stamp and (self.newest is None or stamp > self.newest):
                        self.newest = stamp
                    if since is not None:
                        self.holders.add(f"fhir:{kind}/{resource.get('id')}#")
                    for item in resource_rows(resource):
                        if not isinstance(item, Rejected) and item["id_nat"]:
                            mail, holder = hash(item["mail"]), hash(item["id_nat"])
                            if holder_of.get(mail) == holder:
                                self.same_holder += 1
                                continue
                            holder_of.setdefault(mail, holder)
                        self.read += 1
                        yield item
                if self.progress:
                    self.progress(self.read)
                url = next((link.get("url") for link in bundle.get("link") or ()
                            if link.get("relation") == "next"), None)

    def lookup(self, address: str) -> list[Row]:
        """The rows of one address, asked with ``mailbox-mss`` (a string search: a prefix
        match, so the exact address is kept): what reconciliation asks of the API about a
        mailbox the extraction lists and the last runs did not bring."""
        address = address.strip().lower()
        found: list[Row] = []
        for kind in self.config.resources:
            url: str | None = self.client.url(kind, {"mailbox-mss": address,
                                                     "_count": str(self.config.page_size)})
            while url:
                bundle = self.client.get(url)
                for entry in bundle.get("entry") or ():
                    found += [r for r in resource_rows(entry.get("resource") or {})
                              if not isinstance(r, Rejected) and r["mail"] == address]
                url = next((link.get("url") for link in bundle.get("link") or ()
                            if link.get("relation") == "next"), None)
        return found

    def high_water(self, started: float) -> str | None:
        """The newest meta.lastUpdated seen, but never within SKEW_MARGIN of the run's
        start (a resource may change in the same second after its page was read)."""
        if self.newest is None:
            return None
        limit = dt.datetime.fromtimestamp(started - SKEW_MARGIN, dt.UTC)
        return mark(min(self.newest, limit))

    def close(self) -> None:
        self.client.close()


if TYPE_CHECKING:
    from directory.sources import Source

    def _is_a_source(source: FhirSource) -> Source:
        return source  # mypy checks FhirSource against the protocol
