"""The dev cluster's PKI, generated with ``cryptography``: nothing is downloaded.

One CA signs everything: the kube-apiserver's serving certificate (SANs for
127.0.0.1, localhost and the in-cluster ``kubernetes.default.svc`` names) and
client certificates for each identity talking to it (the admin in
``system:masters``, the scheduler and the controller-manager under their
well-known RBAC user names). A separate key pair signs service-account
tokens. Keys are ECDSA P-256: instant to generate, supported everywhere here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)

#: The only client name a vnode's kubelet API accepts (the dev CA signs the admin too).
KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"

# Client identities: file stem -> (common name = user, organisation = group)
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("rayscale-admin", "system:masters"),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    # the API server's identity towards kubelets (logs, exec, port-forward), as kubeadm's
    "kubelet-client": (KUBELET_CLIENT_CN, "kubeadm:cluster-admins"),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files in one directory."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, who: str) -> Path:
        return self.dir / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.dir / f"{who}.key"

    def complete(self) -> bool:
        paths = [self.ca_cert, self.ca_key, self.serving_cert, self.serving_key,
                 self.sa_key, self.sa_pub]
        for who in CLIENTS:
            paths += [self.client_cert(who), self.client_key(who)]
        return all(p.exists() for p in paths)


def ensure_pki(directory: Path, service_ip: str = "10.96.0.1") -> Pki:
    """Generate the PKI in ``directory`` unless it is already complete there.

    A PKI made by an older rayscale (a client identity added since) keeps its CA
    and gets only the missing client certificates, so existing kubeconfigs,
    service-account tokens and etcd data stay valid.
    """
    pki = Pki(directory)
    if pki.complete():
        return pki
    if all(p.exists() for p in (pki.ca_cert, pki.ca_key, pki.serving_cert, pki.serving_key,
                                pki.sa_key, pki.sa_pub)):
        _add_missing_clients(pki)
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rayscale-dev-ca")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    sans: list[x509.GeneralName] = [
        x509.DNSName(n) for n in (
            "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    key = _new_key()
    cert = _leaf(ca_cert, ca_key, key, x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver"),
    ]), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write_key(pki.serving_key, key)
    _write_cert(pki.serving_cert, cert)

    for who in CLIENTS:
        _client(pki, who, ca_cert, ca_key)

    sa = _new_key()
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ))
    return pki


def issue_serving_cert(pki: Pki, cert_path: Path, key_path: Path, common_name: str,
                       ips: tuple[str, ...] = ("127.0.0.1",),
                       dns: tuple[str, ...] = ("localhost",)) -> None:
    """A serving certificate signed by the dev CA, for a loopback server the API server
    calls (an admission webhook dialled at ``https://127.0.0.1:PORT``: its SANs must
    name that IP). Written fresh each call; the key is mode 0600."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    key = _new_key()
    cert = _leaf(ca_cert, ca_key, key,
                 x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
                 ExtendedKeyUsageOID.SERVER_AUTH, sans)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _add_missing_clients(pki: Pki) -> None:
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    for who in CLIENTS:
        if not (pki.client_cert(who).exists() and pki.client_key(who).exists()):
            _client(pki, who, ca_cert, ca_key)


def _client(pki: Pki, who: str, ca_cert: x509.Certificate,
            ca_key: ec.EllipticCurvePrivateKey) -> None:
    user, group = CLIENTS[who]
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    if group:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, group))
    key = _new_key()
    cert = _leaf(ca_cert, ca_key, key, x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write_key(pki.client_key(who), key)
    _write_cert(pki.client_cert(who), cert)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
