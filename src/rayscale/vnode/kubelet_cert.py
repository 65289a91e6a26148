"""The kubelet API's serving certificate, as a kubelet with ``serverTLSBootstrap`` gets one.

The vnode asks the cluster for it: a CertificateSigningRequest for the
``kubernetes.io/kubelet-serving`` signer (``system:node:<name>`` in
``system:nodes``, IP SANs of every Node), approved by the vnode itself (its
kubeconfig is an admin's) and signed by the controller-manager with the
cluster CA, so the API server can verify it (``--kubelet-certificate-authority``).
Without those rights or a signer, the vnode falls back to a self-signed
certificate, which only an API server that does not verify kubelets accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import time
import uuid
from pathlib import Path
from typing import cast

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lightkube import ApiError, Client
from lightkube.core.resource import GlobalSubResource
from lightkube.resources.certificates_v1 import CertificateSigningRequest

log = logging.getLogger("rayscale.vnode.kubelet")

SIGNER = "kubernetes.io/kubelet-serving"


def _sans(ips: list[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips])


def _write(directory: Path, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> tuple[Path, Path]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    key_path.touch(mode=0o600, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert_pem)
    return cert_path, key_path


def self_signed(directory: Path, ips: list[str]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rayscale-vnode-kubelet")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(_sans(ips), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, key, cert.public_bytes(serialization.Encoding.PEM))


def cluster_signed(client: Client, node: str, directory: Path, ips: list[str],
                   timeout_s: float = 20.0) -> tuple[Path, Path]:
    """Ask, approve, wait for the signature; raises on any failure (the CSR is removed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]))
        .add_extension(_sans(ips), critical=False)
        .sign(key, hashes.SHA256())
    )
    name = f"{node}-serving-{uuid.uuid4().hex[:8]}"
    pem = request.public_bytes(serialization.Encoding.PEM)
    body = {
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64.b64encode(pem).decode(), "signerName": SIGNER,
                 "usages": ["digital signature", "server auth"]},
    }
    client.create(cast(CertificateSigningRequest, CertificateSigningRequest.from_dict(body)))
    try:
        approval = client.get(CertificateSigningRequest, name).to_dict()
        approval["status"] = {"conditions": [{
            "type": "Approved", "status": "True", "reason": "RayscaleVNodeApproved",
            "message": "the vnode approves its own kubelet serving certificate"}]}
        client.replace(cast(GlobalSubResource,
                            CertificateSigningRequest.Approval.from_dict(approval)), name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            csr = client.get(CertificateSigningRequest, name)
            if csr.status is not None and csr.status.certificate:
                return _write(directory, key, base64.b64decode(csr.status.certificate))
            time.sleep(0.2)
        raise TimeoutError(f"CSR {name} not signed within {timeout_s:.0f}s")
    finally:
        try:
            client.delete(CertificateSigningRequest, name)
        except (ApiError, httpx2.HTTPError) as e:
            log.warning("could not delete CSR %s: %s", name, e)


def serving_identity(client: Client, node: str, directory: Path,
                     ips: list[str]) -> tuple[Path, Path]:
    try:
        return cluster_signed(client, node, directory, ips)
    except (ApiError, httpx2.HTTPError, TimeoutError, ValueError) as e:
        log.warning("kubelet serving certificate not signed by the cluster (%s): self-signed; "
                    "an API server that verifies kubelets will refuse it", e)
        return self_signed(directory, ips)
