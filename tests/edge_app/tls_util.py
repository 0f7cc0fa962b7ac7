"""Real TLS certificates for broker tests, made with the openssl command: a CA, and a broker
certificate it signs for given names, valid for two days or already expired."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(d: Path, *args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    _run(d, "req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}")
    return d / f"{name}.crt", d / f"{name}.key"


def server_cert(d: Path, ca: tuple[Path, Path], san: str, expired: bool = False) -> tuple[Path, Path]:
    _run(d, "req", *_EC, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=broker")
    (d / "san.ext").write_text(f"subjectAltName={san}\n")
    # -days -1: notAfter a day before notBefore (now): a certificate that has expired.
    _run(
        d,
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        "broker.crt",
        "-days",
        "-1" if expired else "2",
        "-extfile",
        "san.ext",
    )
    return d / "broker.crt", d / "broker.key"
