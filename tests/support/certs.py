"""A certificate authority made by the tests, with ``openssl``: server and client certificates
for TLS tests, a second CA nobody trusts, and a key with a passphrase."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def require_openssl() -> None:
    if shutil.which("openssl"):
        return
    if os.environ.get("CI"):
        pytest.fail("openssl is not installed: the TLS tests make their certificates with it")
    pytest.skip("openssl is not installed")


@dataclass(frozen=True)
class Authority:
    """One CA in ``folder``: ``ca.pem``, and certificates it signs by name."""

    folder: Path
    name: str

    @classmethod
    def create(cls, folder: Path, name: str) -> Authority:
        folder.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            cwd=folder,
        )  # fmt: skip
        return cls(folder, name)

    @property
    def pem(self) -> Path:
        return self.folder / f"{self.name}.pem"

    def issue(
        self, common_name: str, *, names: tuple[str, ...] = (), passphrase: str | None = None
    ) -> tuple[Path, Path]:
        """A certificate for ``common_name`` (with DNS/IP ``names``), and its key."""
        stem = f"{self.name}-{common_name}"
        key_args = ["-passout", f"pass:{passphrase}"] if passphrase else ["-noenc"]
        _openssl(
            "req", "-newkey", "rsa:2048", *key_args, "-subj", f"/CN={common_name}",
            "-keyout", f"{stem}.key", "-out", f"{stem}.csr", cwd=self.folder,
        )  # fmt: skip
        extensions = self.folder / f"{stem}.ext"
        alt = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in names)
        extensions.write_text(f"subjectAltName={alt}\n" if alt else "basicConstraints=CA:FALSE\n")
        _openssl(
            "x509", "-req", "-in", f"{stem}.csr", "-CA", f"{self.name}.pem",
            "-CAkey", f"{self.name}.key", "-CAcreateserial", "-days", "2",
            "-extfile", extensions.name, "-out", f"{stem}.pem", cwd=self.folder,
        )  # fmt: skip
        return self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
