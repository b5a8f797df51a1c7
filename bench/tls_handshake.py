#!/usr/bin/env python3
"""Server CPU of one TLS handshake, without and with a verified client certificate (issue
21: how much of the MX's cost per message is its certificate check; a script, not a test).

A throw-away ``mss init`` gives the node's certificate and CA; a client certificate is
issued by that CA as an operator's would be. Client and server run in this process over
memory BIOs (no socket, no other process), and only the server side's calls are timed
(thread CPU time): the handshake of a listener that asks for no certificate (submission,
like the floor server) and of the MX, which asks for one (its CertificateVerify signature
checked, the chain taken as presented: trustspace/tlshook.py). mss's own checks after the
handshake (the chain by trustspace/chain.py, cached per chain; the DN against the
whitelist) are not in it.

    .venv/bin/python bench/tls_handshake.py --handshakes 300
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def server_cpu_ms(server: ssl.SSLContext, client: ssl.SSLContext, count: int) -> float:
    """Mean server thread CPU (ms) of *count* full handshakes (TLS 1.3 tickets included)."""
    spent = 0.0
    for _ in range(count):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        peer = client.wrap_bio(c_in, c_out)
        ours = server.wrap_bio(s_in, s_out, server_side=True)
        peer_done = ours_done = False
        while not (peer_done and ours_done):
            if not peer_done:
                try:
                    peer.do_handshake()
                    peer_done = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            began = time.thread_time()
            if not ours_done:
                try:
                    ours.do_handshake()
                    ours_done = True
                except ssl.SSLWantReadError:
                    pass
            spent += time.thread_time() - began
            c_in.write(s_out.read())
    return 1000 * spent / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from trustspace.pki import issue_certificate, server_context
    from trustspace.tlshook import accept_any_client_certificate

    with tempfile.TemporaryDirectory(prefix="mss-tls-") as tmp:
        data = Path(tmp) / "node"
        subprocess.run([sys.executable, "-m", "mss", "init", "--data-dir", str(data),
                        "--domain", "bench.mssante.fr"], check=True, cwd=REPO,
                       capture_output=True)
        pki = data / "pki"
        cert, key = issue_certificate(pki, "operator", ["mx.operator-a.mssante.fr"],
                                      subject="CN=mx.operator-a.fr,C=FR")
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.load_cert_chain(cert, key)
        # the listeners' own contexts: submission's, and the MX's (a certificate asked
        # for and taken by trustspace/tlshook.py, its chain verified after the handshake)
        plain = server_context(pki / "server.crt", pki / "server.key")
        verified = server_context(pki / "server.crt", pki / "server.key")
        accept_any_client_certificate(verified)  # as mss/runtime.py's tls_contexts
        rows = [(server_cpu_ms(plain, client, args.handshakes),
                 server_cpu_ms(verified, client, args.handshakes)) for _ in range(args.rounds)]
    no_cert = min(r[0] for r in rows)
    with_cert = min(r[1] for r in rows)
    print(json.dumps({"handshakes": args.handshakes, "server_cpu_ms_no_client_cert":
                      round(no_cert, 3), "server_cpu_ms_mx_client_cert":
                      round(with_cert, 3), "certificate_check_ms": round(with_cert - no_cert,
                                                                         3)}))


if __name__ == "__main__":
    main()
