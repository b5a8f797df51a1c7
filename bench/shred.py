"""Cost of a crypto-shred (Keyring.destroy: every other key re-wrapped under a new master
version wrapped by the next KEK generation, then the provider ratcheted) against the number
of keys in the keyring, with the key file provider and a PKCS#11 token (SoftHSM2,
tests/softhsm.py), on SQLite.

    python bench/shred.py --keys 10000

Figures: docs/keys.md "Cost of a shred" (they vary with the machine's load).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mss import crypto, db  # noqa: E402
from mss.pkcs11 import Pkcs11KeyProvider, generate_kek  # noqa: E402
from tests.softhsm import softhsm  # noqa: E402


def run(provider: crypto.KeyProvider, where: Path, keys: int, rounds: int) -> tuple[float, float]:
    """(CPU, wall) seconds of the best of *rounds* shreds of one key among *keys*."""
    engine = db.make_engine(f"sqlite:///{where / 'mss.db'}")
    db.create_schema(engine)
    keyring = crypto.Keyring(engine, provider)
    with engine.begin() as conn:
        for i in range(keys + rounds):
            keyring.create_key(conn, f"mailbox:{i}")
    cpu, wall = [], []
    for n in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        with engine.begin() as conn:
            keyring.destroy(conn, f"mailbox:{n}")
        with engine.connect() as conn:
            keyring.catch_up(conn)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    engine.dispose()
    return min(cpu), min(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key_file = root / "master.key"
        crypto.new_master_key_file(key_file)
        (root / "file").mkdir()
        token = softhsm().token()
        generate_kek(token.config())
        (root / "pkcs11").mkdir()
        for name, provider in (("file", crypto.FileKeyProvider(key_file)),
                               ("pkcs11", Pkcs11KeyProvider(token.config()))):
            cpu, wall = run(provider, root / name, args.keys, args.rounds)
            print(f"{name:7} shred of 1 key among {args.keys}: {cpu:.3f} s CPU, "
                  f"{wall:.3f} s wall (best of {args.rounds})")
            provider.close()


if __name__ == "__main__":
    main()
