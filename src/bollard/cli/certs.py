"""A small local certificate authority for `bollard up` (and for tests).

``bollard up`` keeps its TLS files in ``<data-dir>/tls`` (mode 0700):

- ``ca.pem`` / ``ca.key``: the cluster's own CA (EC P-256, 10 years), made at the first run
  and reused by every later one, so agents and CLIs that trust it keep trusting the server;
- ``server.pem`` / ``server.key``: the server's certificate, signed by that CA, for the
  listen host, ``127.0.0.1``, ``::1`` and ``localhost`` (and the machine's names when it
  listens on every address); reused while it names the hosts asked for and is valid for at
  least 30 more days, reissued otherwise;
- ``client-NAME.pem`` / ``client-NAME.key``: client certificates (``bollard up
  --client-certs``), one per agent and one (``client-cli``) for the CLI.

Private keys are written mode 0600 from their first byte on, certificates mode 0644.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bollard.durable import write_atomic

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)
# Names every local server certificate carries, whatever host it listens on.
LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")

PrivateKey = ec.EllipticCurvePrivateKey


class CertError(Exception):
    """A certificate or key cannot be made or read; the message is one line."""


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalTls:
    """The TLS files of a `bollard up` cluster."""

    directory: Path
    ca: CertFiles
    server: CertFiles


def tls_dir_of(data_dir: Path) -> Path:
    return data_dir / "tls"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; ``path`` itself ends up mode 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(path, pem, mode=0o600)
    os.chmod(path, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise CertError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise CertError(f"{path} holds no PEM certificate") from None


def _load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise CertError(f"cannot read the private key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise CertError(f"{path} holds no unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{path} is not an EC private key (bollard's local CA uses P-256)")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bollard"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures (ECDHE handshakes); for a CA also signing certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(files: CertFiles, common_name: str = "Bollard local CA") -> None:
    """A new self-signed CA in ``files`` (overwriting what is there)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(files.key, key)
    _write_cert(files.cert, cert)


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    ca: CertFiles,
    out: CertFiles,
    common_name: str,
    *,
    hosts: list[str] | None = None,
    client: bool = False,
) -> None:
    """A certificate signed by ``ca``: for a server (``hosts``: its names and addresses) or,
    with ``client``, for a client (agent or CLI) presenting it to a server."""
    ca_cert, ca_key = _load_cert(ca.cert), _load_key(ca.key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        names = [_san_entry(h) for h in dict.fromkeys(hosts)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write_key(out.key, key)
    _write_cert(out.cert, builder.sign(ca_key, hashes.SHA256()))


def _still_good(ca: CertFiles, files: CertFiles, hosts: list[str] | None) -> bool:
    """True if ``files`` is a usable certificate from ``ca`` naming ``hosts``."""
    if not (files.cert.exists() and files.key.exists()):
        return False
    try:
        cert, key, ca_cert = _load_cert(files.cert), _load_key(files.key), _load_cert(ca.cert)
        cert.verify_directly_issued_by(ca_cert)
    except (CertError, ValueError, TypeError, InvalidSignature):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        if not {_san_entry(h) for h in hosts} <= set(san):
            return False
    return True


def server_hosts(host: str) -> list[str]:
    """The names a local server listening on ``host`` is reached by."""
    names = [host, *LOCAL_NAMES]
    if host in ("", "0.0.0.0", "::"):
        names = [socket.gethostname(), socket.getfqdn(), *LOCAL_NAMES]
    return list(dict.fromkeys(n for n in names if n))


def ensure_local_tls(data_dir: Path, host: str) -> LocalTls:
    """The CA and server certificate of the cluster in ``data_dir``: reused when present and
    good for ``host``, made (or the server certificate reissued) otherwise."""
    directory = private_dir(tls_dir_of(data_dir))
    ca = CertFiles(directory / "ca.pem", directory / "ca.key")
    if ca.cert.exists() != ca.key.exists():
        missing = ca.key if ca.cert.exists() else ca.cert
        raise CertError(
            f"the cluster's CA is incomplete ({missing} is missing); remove {directory} to make"
            " a new CA (agents and CLIs elsewhere must then trust the new ca.pem)"
        )
    if not ca.cert.exists():
        make_ca(ca)
    else:
        cert = _load_cert(ca.cert)
        _load_key(ca.key)
        if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
            raise CertError(
                f"the cluster's CA {ca.cert} expires on {cert.not_valid_after_utc:%Y-%m-%d};"
                f" remove {directory} to make a new one"
            )
    server = CertFiles(directory / "server.pem", directory / "server.key")
    hosts = server_hosts(host)
    if not _still_good(ca, server, hosts):
        issue(ca, server, hosts[0], hosts=hosts)
    return LocalTls(directory, ca, server)


def ensure_client_cert(tls: LocalTls, name: str) -> CertFiles:
    """The client certificate ``client-NAME`` from the cluster's CA (reused while good)."""
    files = CertFiles(tls.directory / f"client-{name}.pem", tls.directory / f"client-{name}.key")
    if not _still_good(tls.ca, files, None):
        issue(tls.ca, files, name, client=True)
    return files
