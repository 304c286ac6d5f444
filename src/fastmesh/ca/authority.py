"""The CA directory and what it does: init, load, issue, rotate_root, drop_old_roots.

Layout of the directory (all PEM):
  root.pem, root-key.pem                  the current root (self-signed; URI SAN spiffe://<td>)
  intermediate.pem, intermediate-key.pem  signed by the current root; signs workload certificates
  bundle.pem                              the trusted roots: the current one, plus the previous
                                          ones while a rotation is under way
Keys are PKCS#8, mode 0600; certificates mode 0644.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastmesh import spiffe
from fastmesh.issued import Issued
from fastmesh.ca.files import CERT_MODE, KEY_MODE, write_atomic

ROOT = "root.pem"
ROOT_KEY = "root-key.pem"
INTERMEDIATE = "intermediate.pem"
INTERMEDIATE_KEY = "intermediate-key.pem"
BUNDLE = "bundle.pem"
FILES = (ROOT, ROOT_KEY, INTERMEDIATE, INTERMEDIATE_KEY, BUNDLE)

# CA certificates are backdated a little: a clock slightly behind still accepts them.
_CA_BACKDATE = timedelta(minutes=5)


class CAError(Exception):
    """A CA operation failed; the message says why and, where it helps, what to do."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _serial() -> int:
    return secrets.randbits(127) | 1  # positive, non-zero, < 2**159 (RFC 5280: at most 20 octets)


def _ca_cert(*, subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             issuer_key: ec.EllipticCurvePrivateKey, trust_domain: str, ttl: timedelta,
             path_length: int, not_after_cap: datetime | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    not_after = now + ttl
    if not_after_cap is not None:
        not_after = min(not_after, not_after_cap)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(_serial())
        .not_valid_before(now - _CA_BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastmesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _root_and_intermediate(trust_domain: str, root_ttl: timedelta, intermediate_ttl: timedelta
                           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate,
                                      ec.EllipticCurvePrivateKey, x509.Certificate]:
    for what, ttl in (("root_ttl", root_ttl), ("intermediate_ttl", intermediate_ttl)):
        if ttl <= timedelta(0):
            raise CAError(f"{what} must be positive, got {ttl}")
    generation = secrets.token_hex(4)  # tells roots apart in a bundle holding two of them
    root_key, int_key = _new_key(), _new_key()
    root_name = _name(f"fastmesh root CA {trust_domain} {generation}")
    root = _ca_cert(subject=root_name, key=root_key, issuer=root_name, issuer_key=root_key,
                    trust_domain=trust_domain, ttl=root_ttl, path_length=1)
    intermediate = _ca_cert(subject=_name(f"fastmesh intermediate CA {trust_domain} {generation}"),
                            key=int_key, issuer=root_name, issuer_key=root_key,
                            trust_domain=trust_domain, ttl=intermediate_ttl, path_length=0,
                            not_after_cap=root.not_valid_after_utc)
    return root_key, root, int_key, intermediate


def _trust_domain_of(cert: x509.Certificate, path: Path) -> str:
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith("spiffe://") and "/" not in uri[len("spiffe://"):]:
            return uri[len("spiffe://"):]
    raise CAError(f"{path}: the root certificate has no spiffe://<trust domain> URI SAN")


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def make_csr(spiffe_id: str) -> tuple[str, str]:
    """(key PEM, CSR PEM): a new key and a CSR for it asking for `spiffe_id` (its URI SAN)."""
    key = _new_key()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
           .sign(key, hashes.SHA256()))
    return _key_pem(key).decode(), csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_uris(csr_pem: str) -> list[str]:
    """The URI SANs a CSR asks for; ValueError if it is not a PEM CSR."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


class CA:
    """A CA directory, loaded. Create one with `CA.init`, open one with `CA.load`."""

    def __init__(self, directory: Path, trust_domain: str, root: x509.Certificate,
                 root_key: ec.EllipticCurvePrivateKey, intermediate: x509.Certificate,
                 intermediate_key: ec.EllipticCurvePrivateKey, bundle: list[x509.Certificate]):
        self.directory = directory
        self.trust_domain = trust_domain
        self.root = root
        self.intermediate = intermediate
        self.bundle = bundle
        self._root_key = root_key
        self._intermediate_key = intermediate_key

    # -- creating and opening ------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path, trust_domain: str, *, root_ttl: timedelta = timedelta(days=3650),
             intermediate_ttl: timedelta = timedelta(days=365)) -> CA:
        problem = spiffe.trust_domain_problem(trust_domain)
        if problem:
            raise CAError(problem)
        directory = Path(directory)
        existing = [name for name in FILES if (directory / name).exists()]
        if existing:
            raise CAError(f"refusing to overwrite the existing CA in {directory} "
                          f"({', '.join(existing)} already there)")
        directory.mkdir(parents=True, exist_ok=True)
        root_key, root, int_key, intermediate = _root_and_intermediate(
            trust_domain, root_ttl, intermediate_ttl)
        ca = cls(directory, trust_domain, root, root_key, intermediate, int_key, [root])
        ca._write_root_and_intermediate()
        ca._write_bundle()
        return ca

    @classmethod
    def load(cls, directory: Path) -> CA:
        directory = Path(directory)
        if not (directory / ROOT).exists():
            raise CAError(f"{directory}: no CA here ({ROOT} missing); create one with "
                          "`fastmesh ca init --dir DIR --trust-domain TD`")
        root = _read_cert(directory / ROOT)
        intermediate = _read_cert(directory / INTERMEDIATE)
        root_key = _read_key(directory / ROOT_KEY)
        int_key = _read_key(directory / INTERMEDIATE_KEY)
        bundle = _read_certs(directory / BUNDLE)
        # A rotation in another process replaces the files one by one: refuse a mixed set.
        if not _same_key(root, root_key) or not _same_key(intermediate, int_key):
            raise CAError(f"{directory}: a certificate does not match its key (a rotation is "
                          "under way?); try again")
        if intermediate.issuer != root.subject:
            raise CAError(f"{directory}: {INTERMEDIATE} was not issued by {ROOT} (a rotation "
                          "is under way?); try again")
        if root not in bundle:
            raise CAError(f"{directory}: {BUNDLE} does not contain {ROOT}")
        return cls(directory, _trust_domain_of(root, directory / ROOT), root, root_key,
                   intermediate, int_key, bundle)

    # -- reading ---------------------------------------------------------------------------------

    def bundle_pem(self) -> str:
        return b"".join(_cert_pem(c) for c in self.bundle).decode()

    def standing_of(self, cert_chain_pem: str) -> str:
        """How a chain issued earlier stands with this CA now: `"current"` (by the current
        intermediate), `"trusted"` (another intermediate, issued by a root of the bundle: a
        rotation is under way) or `"untrusted"`."""
        chain = x509.load_pem_x509_certificates(cert_chain_pem.encode())
        if len(chain) < 2:
            return "untrusted"
        if chain[1] == self.intermediate:
            return "current"
        if any(chain[1].issuer == root.subject for root in self.bundle):
            return "trusted"
        return "untrusted"

    # -- issuing ---------------------------------------------------------------------------------

    def issue(self, spiffe_id: str, *, ttl: timedelta = timedelta(hours=24),
              not_before: datetime | None = None) -> Issued:
        """A workload certificate for `spiffe_id`, valid from `not_before` (default: now) for
        `ttl`, capped at the intermediate's expiry. `not_before` may lie in the past or the future."""
        try:
            spiffe.parse(spiffe_id, self.trust_domain)
        except ValueError as e:
            raise CAError(str(e)) from None
        start, end = self._validity(not_before, ttl)
        key = _new_key()
        cert = self._leaf(key.public_key(), start, end,
                          [x509.UniformResourceIdentifier(spiffe_id)], critical_san=True)
        return self._issued(cert, _key_pem(key).decode(), spiffe_id)

    def sign_csr(self, csr_pem: str, spiffe_id: str, *, ttl: timedelta = timedelta(hours=24)) -> Issued:
        """A workload certificate for `spiffe_id` on the public key of a CSR (PEM), whose signature
        must verify; the CSR's own names are not used (the caller checks them). `key_pem` is empty:
        the key never left its owner."""
        try:
            spiffe.parse(spiffe_id, self.trust_domain)
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as e:
            raise CAError(str(e)) from None
        if not csr.is_signature_valid:
            raise CAError("the CSR's signature does not verify")
        start, end = self._validity(None, ttl)
        cert = self._leaf(csr.public_key(), start, end, [x509.UniformResourceIdentifier(spiffe_id)],
                          critical_san=True)
        return self._issued(cert, "", spiffe_id)

    def issue_server(self, hosts: list[str], *, ttl: timedelta = timedelta(days=30)) -> Issued:
        """A serving certificate for `hosts` (DNS names or IP addresses, as the clients dial them)
        and the trust domain's URI, e.g. for the control plane."""
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"spiffe://{self.trust_domain}")]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        start, end = self._validity(None, ttl)
        key = _new_key()
        cert = self._leaf(key.public_key(), start, end, sans, critical_san=False)
        return self._issued(cert, _key_pem(key).decode(), f"spiffe://{self.trust_domain}")

    def _issued(self, cert: x509.Certificate, key_pem: str, spiffe_id: str) -> Issued:
        return Issued(cert_chain_pem=(_cert_pem(cert) + _cert_pem(self.intermediate)).decode(), key_pem=key_pem,
                      spiffe_id=spiffe_id, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)

    def _validity(self, not_before: datetime | None, ttl: timedelta) -> tuple[datetime, datetime]:
        if ttl <= timedelta(0):
            raise CAError(f"ttl must be positive, got {ttl}")
        start = not_before if not_before is not None else datetime.now(UTC)
        if start.tzinfo is None:
            raise CAError("not_before must be timezone-aware (e.g. datetime.now(UTC))")
        end = min(start + ttl, self.intermediate.not_valid_after_utc)
        if end <= start:
            raise CAError(f"the intermediate expires at {self.intermediate.not_valid_after_utc}, "
                          f"before the requested not_before {start}")
        return start, end

    def _leaf(self, public_key: Any, start: datetime, end: datetime, sans: list[x509.GeneralName],
              critical_san: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            # Empty subject, identity in the (therefore critical) URI SAN: RFC 5280 4.2.1.6.
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(public_key).serial_number(_serial())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=critical_san)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._intermediate_key.public_key()), critical=False)
            .sign(self._intermediate_key, hashes.SHA256())
        )

    # -- rotating ------------------------------------------------------------------------------

    def rotate_root(self, *, root_ttl: timedelta = timedelta(days=3650),
                    intermediate_ttl: timedelta = timedelta(days=365)) -> None:
        """A new root and intermediate. The bundle (written first) trusts the old roots and the
        new one; from now on certificates are issued under the new intermediate. Call
        `drop_old_roots` once every workload holds a certificate from the new chain."""
        root_key, root, int_key, intermediate = _root_and_intermediate(
            self.trust_domain, root_ttl, intermediate_ttl)
        self.bundle = [root, *(c for c in self.bundle if c != root)]
        self._write_bundle()
        self.root, self._root_key = root, root_key
        self.intermediate, self._intermediate_key = intermediate, int_key
        self._write_root_and_intermediate()

    def drop_old_roots(self) -> int:
        """Trust only the current root; returns how many roots were dropped."""
        dropped = sum(1 for c in self.bundle if c != self.root)
        self.bundle = [self.root]
        self._write_bundle()
        return dropped

    # -- files ---------------------------------------------------------------------------------

    def _write_root_and_intermediate(self) -> None:
        # Keys before their certificates; `load` refuses a pair that does not match.
        write_atomic(self.directory / ROOT_KEY, _key_pem(self._root_key), KEY_MODE)
        write_atomic(self.directory / ROOT, _cert_pem(self.root), CERT_MODE)
        write_atomic(self.directory / INTERMEDIATE_KEY, _key_pem(self._intermediate_key), KEY_MODE)
        write_atomic(self.directory / INTERMEDIATE, _cert_pem(self.intermediate), CERT_MODE)

    def _write_bundle(self) -> None:
        write_atomic(self.directory / BUNDLE, self.bundle_pem().encode(), CERT_MODE)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CAError(f"{path}: missing (the CA directory is incomplete)") from None
    except OSError as e:
        raise CAError(f"{path}: {e.strerror or e}") from None


def _read_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(path))
    except ValueError as e:
        raise CAError(f"{path}: not a PEM certificate ({e})") from None
    return certs


def _read_cert(path: Path) -> x509.Certificate:
    certs = _read_certs(path)
    if len(certs) != 1:
        raise CAError(f"{path}: expected one certificate, found {len(certs)}")
    return certs[0]


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as e:
        raise CAError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path}: expected an ECDSA key, found {type(key).__name__}")
    return key
