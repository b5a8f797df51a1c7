"""A real SoftHSM2 token per test process (Debian ``softhsm2``), for the PKCS#11 provider.

The token directory is a temporary directory named by a config file that ``SOFTHSM2_CONF``
points at, in this process and in the mss processes the tests start
(tests/node.py ``set_child_env``). Tokens are made with ``softhsm2-util --init-token``; the
KEK in them by the real ``mss keys init-hsm`` or :func:`mss.pkcs11.generate_kek`. Without
softhsm2 the tests skip, except under ``CI=true`` where they fail (make test installs it).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from mss.pkcs11 import TokenConfig
from tests.node import set_child_env

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
SO_PIN = "12345678"
POOL = 8  # tokens per test process (softhsm2-util --init-token: ~0.1 s each)


@dataclass(frozen=True)
class Token:
    label: str
    pin: str
    pin_file: Path  # mode 0600

    def config(self, key_label: str = "mss-kek") -> TokenConfig:
        return TokenConfig(MODULE, self.label, key_label, self.pin_file, None)

    def toml(self, key_label: str = "mss-kek") -> str:
        """The [keys] lines of a node using this token."""
        return (f'provider = "pkcs11"\npkcs11_module = "{MODULE}"\n'
                f'token_label = "{self.label}"\nkey_label = "{key_label}"\n'
                f'pin_file = "{self.pin_file}"\n')


class SoftHsm:
    """The process's token directory; :meth:`token` initialises a new token in it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mss-softhsm-"))
        atexit.register(shutil.rmtree, self.root, True)
        (self.root / "tokens").mkdir()
        self.conf = self.root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.root / 'tokens'}\n"
                             "objectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)  # read at C_Initialize
        set_child_env("SOFTHSM2_CONF", str(self.conf))
        # made before this process initialises the library: SoftHSM2 lists the tokens of
        # its directory at C_Initialize only (the mss processes started later see them all)
        self._free = [self._init_token(f"mss-test-{n}", f"{n}-pin-{n}")
                      for n in range(1, POOL + 1)]

    def token(self) -> Token:
        """A token of its own (a label, a PIN, no key yet)."""
        with _LOCK:
            assert self._free, f"more than {POOL} tokens in one test process: raise POOL"
            return self._free.pop(0)

    def _init_token(self, label: str, pin: str) -> Token:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                        "--so-pin", SO_PIN, "--pin", pin],
                       check=True, capture_output=True, timeout=30)
        pin_file = self.root / f"{label}.pin"
        fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pin + "\n")
        return Token(label, pin, pin_file)


_LOCK = threading.Lock()
_MAKING = threading.Lock()
_HSM: list[SoftHsm] = []


def softhsm() -> SoftHsm:
    """This process's SoftHSM2 (skip, or fail under CI=true, when it is not installed)."""
    if shutil.which("softhsm2-util") is None or not MODULE.exists():
        message = f"softhsm2 not installed (softhsm2-util, {MODULE})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with _MAKING:
        if not _HSM:
            _HSM.append(SoftHsm())
        return _HSM[0]
