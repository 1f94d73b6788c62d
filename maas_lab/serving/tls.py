"""Checking a TLS certificate and key before a server starts with them.

uvicorn and grpcio would each find a bad pair too, but only inside a worker, after the
supervisor started, as a log line or a worker that never gets ready. Checked here first, a
missing file, a file that is not PEM, a key that belongs to another certificate or a
certificate out of its validity dates is one line that names the file and the fix, before
anything starts.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..errors import UsageError
from ..hints import option


def check_pair(cert, key) -> dict:
    """Check a PEM certificate (chain) and its private key; ``{"subject", "not_after",
    "days_left"}`` for status, or :class:`UsageError` saying what is wrong and what to do."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = Path(cert), Path(key)
    cert_pem = _read(cert_path, "tls_cert", "certificate")
    key_pem = _read(key_path, "tls_key", "private key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        chain = []
    if not chain:
        raise UsageError(
            f"{cert_path} is not a PEM certificate (-----BEGIN CERTIFICATE-----); give "
            f"{option('tls_cert')} the server's certificate in PEM form."
        )
    leaf = chain[0]  # the server's own certificate comes first; any CA certificates follow
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise UsageError(
            f"{key_path} is encrypted with a passphrase; give {option('tls_key')} an "
            "unencrypted key (e.g. `openssl pkey -in KEY -out KEY.plain`), readable only by you."
        ) from None
    except Exception:  # ValueError, or a key type this cryptography cannot read
        raise UsageError(
            f"{key_path} is not a PEM private key (-----BEGIN PRIVATE KEY-----); give "
            f"{option('tls_key')} the key of the certificate in PEM form."
        ) from None
    if _public(private.public_key()) != _public(leaf.public_key()):
        raise UsageError(
            f"{key_path} is not the key of {cert_path} (their public keys differ); give "
            f"{option('tls_key')} the key that the certificate was issued for."
        )
    now = datetime.now(timezone.utc)
    not_before, not_after = _validity(leaf)
    if now < not_before:
        raise UsageError(
            f"{cert_path} is not valid before {not_before:%Y-%m-%d %H:%M} UTC; check this "
            "machine's clock, or issue a certificate valid from now."
        )
    if now > not_after:
        raise UsageError(
            f"{cert_path} expired on {not_after:%Y-%m-%d %H:%M} UTC; renew it and start the "
            "server with the new one."
        )
    return {
        "subject": leaf.subject.rfc4514_string(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - now).days,
    }


def _read(path: Path, label: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{path} does not exist; give {option(label)} the path of the server's {what} "
            "(a PEM file)."
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder; give {option(label)} a PEM file.") from None
    except OSError as exc:
        raise UsageError(
            f"{path} cannot be read ({exc.strerror}); give {option(label)} a PEM file this "
            "user can read."
        ) from None


def _public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _validity(cert) -> tuple[datetime, datetime]:
    return cert.not_valid_before_utc, cert.not_valid_after_utc
