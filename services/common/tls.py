"""Mutual TLS on every TCP port: only holders of a certificate of the cluster's CA get in.

Every daemon serves TCP with grpc's own SSL credentials, requiring a client certificate signed by
the cluster CA (`pki`, `skyge ca`): a caller without one, or with one of another CA, is refused
in the TLS handshake and never reaches a servicer (it sees UNAVAILABLE: grpc offers no way to
ask for a client certificate without requiring it, which an UNAUTHENTICATED answer would need).
The caller's identity comes from its certificate's DNS name (`Identity`), never from request
fields or headers.

Clients check a daemon's certificate against ``cluster.skyge.internal`` (not against the address
they dialled: nodes are reached by IP on two paths, and every node and witness certificate carries
that name, administrator certificates do not).

A node's files: ROOT/etc/skyge/tls/{ca.crt,node.crt,node.key} by default (config keys `tls_ca`,
`tls_cert`, `tls_key` of each daemon).
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import grpc

from skyge.services.common.paths import NodePaths

DNS_SUFFIX = ".skyge.internal"
#: the name every daemon's certificate carries and every client checks
SERVER_NAME = "cluster" + DNS_SUFFIX
TLS_FOLDER = "tls"
_NAME = re.compile(r"^(?:node-(?P<domain>[0-9]{1,2})|witness"
                   r"|admin-(?P<admin>[a-z0-9][a-z0-9-]{0,30}))" + re.escape(DNS_SUFFIX) + "$")
ADMIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
MAX_DOMAIN = 64


class TlsError(Exception):
    """TLS files are missing or unusable; the message names the file and what to do."""


@dataclass(frozen=True)
class Identity:
    """Who holds a certificate: node D (domain 1..64), the witness, or a named administrator."""

    kind: str  # "node" | "witness" | "admin"
    domain: int = 0
    name: str = ""

    @classmethod
    def node(cls, domain: int) -> Identity:
        if not 1 <= domain <= MAX_DOMAIN:
            raise ValueError(f"domain must be from 1 to {MAX_DOMAIN}, got {domain}")
        return cls("node", domain=domain)

    @classmethod
    def admin(cls, name: str) -> Identity:
        if not ADMIN_NAME.match(name):
            raise ValueError(f"an administrator's name is 1 to 31 of a-z, 0-9 and '-', "
                             f"not starting with '-'; got {name!r}")
        return cls("admin", name=name)

    @property
    def dns_name(self) -> str:
        if self.kind == "node":
            return f"node-{self.domain}{DNS_SUFFIX}"
        if self.kind == "admin":
            return f"admin-{self.name}{DNS_SUFFIX}"
        return "witness" + DNS_SUFFIX

    @property
    def serves(self) -> bool:
        """Whether the certificate may serve a daemon (carries SERVER_NAME)."""
        return self.kind != "admin"

    @classmethod
    def from_names(cls, names: Sequence[str]) -> Identity | None:
        """The identity among a certificate's DNS names, or None when it has none."""
        for name in names:
            match = _NAME.match(name)
            if match is None:
                continue
            if match.group("domain") is not None:
                domain = int(match.group("domain"))
                if 1 <= domain <= MAX_DOMAIN:
                    return cls("node", domain=domain)
            elif match.group("admin") is not None:
                return cls("admin", name=match.group("admin"))
            else:
                return cls("witness")
        return None

    def __str__(self) -> str:
        return {"node": f"node {self.domain}", "admin": f"administrator {self.name}"}.get(
            self.kind, "the witness")


def caller(context: Any) -> Identity | None:
    """The identity of a TLS caller (from its verified certificate), None for local callers."""
    names = (context.auth_context() or {}).get("x509_subject_alternative_name", ())
    return Identity.from_names([n.decode(errors="replace") for n in names])


def over_tls(context: Any) -> bool:
    return (context.auth_context() or {}).get("transport_security_type") == [b"ssl"]


@dataclass(frozen=True)
class TlsFiles:
    """Where a node's CA certificate, certificate and key are."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def default(cls, paths: NodePaths, name: str = "node") -> TlsFiles:
        folder = paths.etc / TLS_FOLDER
        return cls(folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")

    @classmethod
    def of_prefix(cls, prefix: str | Path) -> TlsFiles:
        """PREFIX.crt and PREFIX.key, with ca.crt in the same folder (`skyge ca issue --out`)."""
        prefix = Path(prefix)
        return cls(prefix.parent / "ca.crt", prefix.with_name(prefix.name + ".crt"),
                   prefix.with_name(prefix.name + ".key"))

    @classmethod
    def configured(cls, paths: NodePaths, config: dict[str, Any]) -> TlsFiles:
        """From a daemon's `tls_ca`/`tls_cert`/`tls_key` (absolute paths are under ROOT)."""
        default = cls.default(paths)

        def pick(key: str, fallback: Path) -> Path:
            return paths.under(config[key]) if config.get(key) else fallback

        return cls(pick("tls_ca", default.ca), pick("tls_cert", default.cert),
                   pick("tls_key", default.key))

    def present(self) -> bool:
        return self.ca.exists() or self.cert.exists() or self.key.exists()


@dataclass(frozen=True)
class Credentials:
    """A node's (or administrator's) TLS material, checked, ready for servers and channels."""

    ca: bytes
    cert: bytes
    key: bytes
    identity: Identity

    @classmethod
    def load(cls, files: TlsFiles) -> Credentials:
        """Read and check the files: present, signed by the CA, in date, with a skyge identity."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        data = {}
        for label, path in (("tls_ca", files.ca), ("tls_cert", files.cert), ("tls_key", files.key)):
            try:
                data[label] = path.read_bytes()
            except OSError as error:
                raise TlsError(f"{label}: cannot read {path}: {error.strerror} (make the files "
                               f"with `skyge ca issue`, see the README)") from None
        try:
            ca = x509.load_pem_x509_certificate(data["tls_ca"])
        except ValueError as error:
            raise TlsError(f"tls_ca: {files.ca} is not a PEM certificate: {error}") from None
        try:
            cert = x509.load_pem_x509_certificate(data["tls_cert"])
        except ValueError as error:
            raise TlsError(f"tls_cert: {files.cert} is not a PEM certificate: {error}") from None
        try:
            key = serialization.load_pem_private_key(data["tls_key"], password=None)
        except (ValueError, TypeError) as error:
            raise TlsError(f"tls_key: {files.key} is not an unencrypted PEM key: {error}") from None
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as error:  # InvalidSignature has no message
            raise TlsError(f"tls_cert: {files.cert} is not signed by the CA in {files.ca} "
                           f"({type(error).__name__})") from None
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
            raise TlsError(f"tls_key: {files.key} is not the key of {files.cert}")
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise TlsError(f"tls_cert: {files.cert} is valid from "
                           f"{cert.not_valid_before_utc:%F %T} to "
                           f"{cert.not_valid_after_utc:%F %T} UTC, not now: issue a new one")
        try:
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        identity = Identity.from_names(names)
        if identity is None:
            raise TlsError(f"tls_cert: {files.cert} names no skyge node, witness or administrator "
                           f"(make it with `skyge ca issue`)")
        return cls(data["tls_ca"], data["tls_cert"], data["tls_key"], identity)

    def server(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)

    def options(self, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", SERVER_NAME), *options]


def channel_factory(credentials: Credentials | None,
                    options: Sequence[tuple[str, Any]] = ()) -> Callable[[str], grpc.aio.Channel]:
    """`make_channel(target)` for peers' daemons: TLS with this node's certificate when it has one,
    plain otherwise (only clusters set `insecure = yes` run without)."""
    if credentials is None:
        return lambda target: grpc.aio.insecure_channel(target, options=list(options))
    creds, opts = credentials.channel(), credentials.options(options)
    return lambda target: grpc.aio.secure_channel(target, creds, options=opts)
