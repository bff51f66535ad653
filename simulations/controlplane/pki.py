"""Credentials of the local control plane: a CA, the API server's serving certificate, the service-account
signing key and static bearer tokens for each client identity.

Side effects: writes PEM files and a token CSV into the given directory (mode 0600 for secrets).

Auth model: TLS everywhere on the API server; clients authenticate with bearer tokens from
`--token-auth-file` (token auth, as the issue allows); authorization is RBAC (+ Node). Each component gets the
identity kube-apiserver's bootstrap RBAC policy expects (system:kube-scheduler, system:kube-controller-manager);
the admin is in system:masters; kwok gets its own user, bound to a narrow ClusterRole by the harness.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

# user name -> (uid, groups)
IDENTITIES: dict[str, tuple[str, list[str]]] = {
    "clique-admin": ("1000", ["system:masters"]),
    "system:kube-controller-manager": ("1001", []),
    "system:kube-scheduler": ("1002", []),
    "clique:kwok": ("1003", []),
}


@dataclass(frozen=True)
class Pki:
    """Paths and tokens produced by `create_pki`."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path  # private key: the controller-manager signs nothing with it today, the API server does
    sa_pub: Path
    token_file: Path
    tokens: dict[str, str]  # user name -> bearer token


def _write(path: Path, data: bytes, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    return path


def create_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clique-local-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    # The in-cluster service name, so a kubeconfig that says https://kubernetes.default also verifies.
    sans += [x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"), x509.DNSName("kubernetes.default.svc"),
             x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name).public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    # Service-account tokens are signed with RS256 by default; use RSA for the widest compatibility.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    tokens = {user: secrets.token_hex(24) for user in IDENTITIES}
    token_lines = [f'{tokens[u]},{u},{uid},"{",".join(groups)}"' for u, (uid, groups) in IDENTITIES.items()]
    return Pki(
        ca_cert=_write(directory / "ca.crt", ca_cert.public_bytes(pem)),
        serving_cert=_write(directory / "apiserver.crt", srv_cert.public_bytes(pem)),
        serving_key=_write(directory / "apiserver.key", srv_key.private_bytes(pem, pkcs8, none), secret=True),
        sa_key=_write(directory / "sa.key", sa_key.private_bytes(pem, pkcs8, none), secret=True),
        sa_pub=_write(directory / "sa.pub", sa_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo)),
        token_file=_write(directory / "tokens.csv", ("\n".join(token_lines) + "\n").encode(), secret=True),
        tokens=tokens,
    )


def kubeconfig_text(server: str, ca_cert: Path, user: str, token: str) -> str:
    """A kubeconfig for one identity (YAML written by hand: the format is tiny and stable)."""
    import base64

    ca = base64.b64encode(ca_cert.read_bytes()).decode()
    return f"""apiVersion: v1
kind: Config
clusters:
- name: clique-local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: clique-local
  context:
    cluster: clique-local
    user: {user}
current-context: clique-local
"""


def create_serving_certs(directory: Path, host: str = "127.0.0.1", common_name: str = "webhook",
                         days: int = 30) -> bytes:
    """A CA of its own and a serving certificate for `host` (webhooks the API server calls by `clientConfig.url`:
    it trusts exactly the caBundle, and the harness CA's key is not kept), written as directory/tls.crt, tls.key
    (the names controller-runtime's and our webhook servers read) and ca.crt; returns the CA (PEM)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "tls.crt").write_bytes(leaf.public_bytes(pem))
    key_path = directory / "tls.key"
    key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_pem
