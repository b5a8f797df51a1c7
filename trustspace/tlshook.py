"""Accept any client certificate during the TLS handshake; mss verifies it afterwards.

Python's :mod:`ssl` verifies a client certificate inside the handshake: a certificate that
fails (expired, revoked, other CA) ends the connection with a TLS alert, so the peer never
gets an SMTP reply and we cannot record why. On the MX and relay listeners we therefore
replace OpenSSL's chain verification by a callback that accepts, and verify the presented
chain in :mod:`trustspace.chain` once the handshake is done; the session refuses mail with
an SMTP reply (docs/flow.md) until that verification succeeds. Nothing is accepted before.

The stdlib offers no verify callback, so the callback is installed with ctypes through
OpenSSL's ``SSL_CTX_set_cert_verify_callback`` on the ``SSL_CTX`` that the
``ssl.SSLContext`` object wraps (its first field after the object header). The pointer is
checked against ``SSL_CTX_get_verify_mode`` before use.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from typing import Any

_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _accept_any(_store: int, _arg: int) -> int:
    return 1  # chain verified after the handshake by trustspace.chain


_accept = _VERIFY_CALLBACK(_accept_any)  # module-level: must outlive every SSL_CTX


class TlsHookError(RuntimeError):
    """The OpenSSL hook could not be installed (unexpected ssl module layout)."""


def _libssl() -> ctypes.CDLL:
    lib = ctypes.CDLL(_ssl.__file__)  # dlsym also searches its libssl dependency
    lib.SSL_CTX_set_cert_verify_callback.argtypes = [ctypes.c_void_p, _VERIFY_CALLBACK,
                                                     ctypes.c_void_p]
    lib.SSL_CTX_set_cert_verify_callback.restype = None
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    return lib


def accept_any_client_certificate(ctx: ssl.SSLContext) -> None:
    """Ask for a client certificate (optional at TLS level) and let any through."""
    lib = _libssl()
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    # OpenSSL modes: CERT_REQUIRED = PEER | FAIL_IF_NO_PEER_CERT (3), CERT_OPTIONAL = PEER (1)
    for mode, expected in ((ssl.CERT_REQUIRED, 3), (ssl.CERT_OPTIONAL, 1)):
        ctx.verify_mode = mode
        if not pointer or lib.SSL_CTX_get_verify_mode(pointer) != expected:
            raise TlsHookError("cannot find the SSL_CTX of an ssl.SSLContext")
    lib.SSL_CTX_set_cert_verify_callback(pointer, _accept, None)


def presented_chain(ssl_object: Any) -> list[bytes]:
    """DER certificates the peer sent: leaf first, then the chain it presented (may be the
    leaf alone, e.g. on session resumption). Empty: no certificate."""
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return []
    chain: list[bytes] = [leaf]
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)  # public in Python 3.13
    if getter is not None:
        for cert in getter() or []:
            der = cert.public_bytes(_ssl.ENCODING_DER)
            if der != leaf:
                chain.append(der)
    return chain
