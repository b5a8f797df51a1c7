"""Cost of unwrapping keys with the PKCS#11 provider (a real SoftHSM2 token, tests/softhsm.py)
against the key file provider (issue 14 point 3).

Measures, best of 5 rounds of ``--keys`` keys, in microseconds of CPU and of wall clock:
- ``provider.unwrap``: one master key unwrapped by the KEK (the token: ``C_Decrypt``
  AES-GCM; the file: AES-GCM in the process). Done once per master version per process.
- ``first use``: ``Keyring.key`` of a mailbox key not cached yet (one ``SELECT`` of its
  keyring row from SQLite, one AES-GCM unwrap in memory under the cached master key).
- ``cached``: ``Keyring.key`` of a cached key (a dict lookup under a lock).

    python bench/keys.py --keys 2000

Figures: docs/keys.md "Cost of the PKCS#11 provider" (they vary with the machine's load).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mss import crypto, db  # noqa: E402
from mss.pkcs11 import Pkcs11KeyProvider, generate_kek  # noqa: E402
from tests.softhsm import softhsm  # noqa: E402


def best(rounds: int, count: int, run: Callable[[int], None]) -> tuple[float, float]:
    """(CPU, wall) microseconds per operation, best round."""
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        run(count)
        cpu.append((time.process_time() - c0) / count * 1e6)
        wall.append((time.perf_counter() - w0) / count * 1e6)
    return min(cpu), min(wall)


def measure(name: str, provider: crypto.KeyProvider, keys: int, directory: Path) -> None:
    secret = b"k" * 32
    blob = provider.wrap(secret, b"mss:master:v1|1")
    unwrap = best(5, keys, lambda n: [provider.unwrap(blob, b"mss:master:v1|1")
                                      for _ in range(n)])
    url = f"sqlite:///{directory / (name + '.db')}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    with engine.begin() as conn:
        maker = crypto.Keyring(engine, provider)
        for i in range(keys):
            maker.create_key(conn, f"mailbox:{i}")
    rings: list[crypto.Keyring] = []

    def first_use(n: int) -> None:
        ring = crypto.Keyring(engine, provider)
        rings.append(ring)
        with engine.connect() as conn:
            ring.verify_master(conn)  # the master version: unwrapped once, here
            for i in range(n):
                ring.key(f"mailbox:{i}", conn)

    first = best(5, keys, first_use)
    ring = rings[-1]
    cached = best(5, keys, lambda n: [ring.key(f"mailbox:{i}") for i in range(n)])
    engine.dispose()
    print(f"{name:7} provider.unwrap {unwrap[0]:7.1f} us CPU {unwrap[1]:7.1f} us wall | "
          f"first use {first[0]:6.1f} / {first[1]:6.1f} | cached {cached[0]:5.2f} / "
          f"{cached[1]:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        key_file = directory / "master.key"
        crypto.new_master_key_file(key_file)
        token = softhsm().token()
        generate_kek(token.config())
        measure("file", crypto.FileKeyProvider(key_file), args.keys, directory)
        measure("pkcs11", Pkcs11KeyProvider(token.config()), args.keys, directory)


if __name__ == "__main__":
    main()
