"""The cluster's certificate authority: making the CA and the certificates it signs.

One CA per cluster (`skyge ca init`); it signs a certificate per node, per witness and per
administrator (`skyge ca issue`). Who a certificate is lives in its DNS names (see `tls`):
``node-D.skyge.internal`` for node D, ``witness.skyge.internal``, ``admin-NAME.skyge.internal``.
Node and witness certificates also carry ``cluster.skyge.internal``, the name every client checks a
daemon's certificate against; administrator certificates do not, so they cannot serve as a daemon.

Keys are ECDSA P-256: small, fast to make (the lab makes one per node at every start) and
accepted by every gRPC implementation.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skyge.services.common.atomic import write_atomic
from skyge.services.common.tls import SERVER_NAME, Identity

CA_CERT, CA_KEY = "ca.crt", "ca.key"
#: default lifetimes: the CA outlives the certificates it signs
CA_DAYS, CERT_DAYS = 3650, 825


class PkiError(Exception):
    """A CA or certificate cannot be made or read; the message names the file."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    # an hour back: nodes whose clocks trail the CA's still accept a certificate made just now
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=days))


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert: bytes
    key: bytes


class Authority:
    """A cluster CA kept in a folder: ca.crt (give it to every node) and ca.key (keep it safe)."""

    def __init__(self, folder: Path, cert: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.folder, self.cert, self.key = folder, cert, key

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)

    @classmethod
    def create(cls, folder: Path, name: str = "skyge cluster", *, days: int = CA_DAYS,
               force: bool = False) -> Authority:
        """Make a new CA in *folder* (refused where one exists, unless *force*)."""
        cert_path, key_path = folder / CA_CERT, folder / CA_KEY
        if not force and (cert_path.exists() or key_path.exists()):
            raise PkiError(f"a CA exists in {folder} already (--force replaces it, and every "
                           f"certificate it signed stops working)")
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True))
        cert = _validity(builder, days).sign(key, hashes.SHA256())
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(key_path, _key_pem(key), mode=0o600)
        write_atomic(cert_path, _cert_pem(cert), mode=0o644)
        return cls(folder, cert, key)

    @classmethod
    def load(cls, folder: Path) -> Authority:
        cert_path, key_path = folder / CA_CERT, folder / CA_KEY
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except FileNotFoundError as error:
            raise PkiError(f"no CA in {folder}: {error.filename} is missing (make one with "
                           f"`skyge ca init`)") from None
        except (OSError, ValueError) as error:
            raise PkiError(f"cannot read the CA in {folder}: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path}: not an ECDSA key made by `skyge ca init`")
        return cls(folder, cert, key)

    def issue(self, identity: Identity, *, days: int = CERT_DAYS) -> Issued:
        """A certificate for *identity*, signed by this CA."""
        key = _new_key()
        names = [identity.dns_name]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if identity.serves:
            names.append(SERVER_NAME)
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               identity.dns_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        cert = _validity(builder, days).sign(self.key, hashes.SHA256())
        return Issued(_cert_pem(cert), _key_pem(key))


def install(folder: Path, ca_pem: bytes, issued: Issued, *, cert_name: str = "node") -> None:
    """Write ca.crt, NAME.crt and NAME.key (0600) into a node's TLS folder."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(folder / CA_CERT, ca_pem, mode=0o644)
    write_atomic(folder / f"{cert_name}.crt", issued.cert, mode=0o644)
    write_atomic(folder / f"{cert_name}.key", issued.key, mode=0o600)
