"""X.509 and key primitives: issue, check, compare and describe certificates.

Scope: pure functions over ``cryptography`` objects -- no files and no keep/reissue policy
(that lives in :mod:`provisioner.pki.store`). Only the explicit ``*_pem`` serialisers ever
turn key material into bytes; descriptions and mismatch reasons never include it.
"""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from provisioner.pki.model import CARequest, CertRequest

# notBefore is backdated so that hosts whose clocks lag slightly still accept new certificates.
CLOCK_SKEW = dt.timedelta(minutes=5)
SERVICE_ACCOUNT_KEY_BITS = 2048

# Keys that can sign certificates here; both take SHA-256 (Ed25519 would need no hash).
IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
IPAddress = IPv4Address | IPv6Address

_EKU_NAMES: dict[ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}
_EKU_ORDER = list(_EKU_NAMES)

_E = TypeVar("_E", bound=x509.ExtensionType)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, for CAs and leaves (kubeadm supports it; fast to generate)."""
    return ec.generate_private_key(ec.SECP256R1())


def new_service_account_key() -> rsa.RSAPrivateKey:
    """A fresh RSA 2048 key for service-account tokens (RS256 is what every consumer accepts)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=SERVICE_ACCOUNT_KEY_BITS)


def key_pem(key: PrivateKeyTypes) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKeyTypes) -> bytes:
    """The public half of ``key`` as SubjectPublicKeyInfo PEM (``BEGIN PUBLIC KEY``)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(data: bytes) -> PrivateKeyTypes | None:
    """Parse an unencrypted PEM private key; ``None`` if it is not one (never echoes the data)."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def same_public_key(key: PrivateKeyTypes, public: PublicKeyTypes) -> bool:
    """Whether ``public`` is the public half of ``key``."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == public.public_bytes(*fmt)


def _validity(now: dt.datetime, days: int) -> tuple[dt.datetime, dt.datetime]:
    return now - CLOCK_SKEW, now + dt.timedelta(days=days)


def issue_ca(
    req: CARequest, key: IssuerKey, validity_days: int, now: dt.datetime
) -> x509.Certificate:
    """A self-signed CA certificate for ``req``."""
    not_before, not_after = _validity(now, validity_days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, req.common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _wanted_ekus(req: CertRequest) -> list[ObjectIdentifier]:
    return [
        oid
        for oid, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, req.server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, req.client),
        )
        if wanted
    ]


def _wanted_ips(req: CertRequest) -> list[IPAddress]:
    # Normalised and de-duplicated so that "::1" and "0::1" count as one address.
    return list(dict.fromkeys(ip_address(s) for s in req.ip_addresses))


def issue_leaf(
    req: CertRequest,
    key: IssuerKey,
    ca_cert: x509.Certificate,
    ca_key: IssuerKey,
    validity_days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """A leaf certificate for ``req`` carrying ``key``'s public half, signed by the CA."""
    not_before, not_after = _validity(now, validity_days)
    # A leaf cannot be trusted beyond its CA, so do not claim otherwise.
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, req.common_name)]
        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in req.organizations]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # keyEncipherment is meaningless for ECDSA but is what kubeadm sets; verifiers ignore it.
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    ekus = _wanted_ekus(req)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(req.dns_names)]
    sans += [x509.IPAddress(ip) for ip in _wanted_ips(req)]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # A CA made elsewhere may lack an SKI; derive the same identifier from its key.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_issuer_public(ca_cert))
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _issuer_public(
    ca_cert: x509.Certificate,
) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TypeError("CA public key is neither ECDSA nor RSA")
    return public


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` names ``ca_cert`` as issuer and its signature verifies with the CA key."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _attrs(name: x509.Name, oid: ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _extension(cert: x509.Certificate, cls: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _sans(cert: x509.Certificate) -> tuple[set[str], set[IPAddress]]:
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), set(_san_ips(san))


def _san_ips(san: x509.SubjectAlternativeName) -> list[IPAddress]:
    # The IPAddress general name may also hold a network (name constraints); SANs hold hosts.
    return [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, IPv4Address | IPv6Address)
    ]


def _ekus(cert: x509.Certificate) -> set[ObjectIdentifier]:
    eku = _extension(cert, x509.ExtendedKeyUsage)
    return set() if eku is None else set(eku)


def _set_diff(label: str, have: set[str], want: set[str]) -> str | None:
    if have == want:
        return None
    changes = [f"+{v}" for v in sorted(want - have)] + [f"-{v}" for v in sorted(have - want)]
    return f"{label} {' '.join(changes)}"


def request_mismatch(cert: x509.Certificate, req: CertRequest) -> str | None:
    """How ``cert`` differs from ``req`` (CN, O, SANs, EKUs), or ``None`` if it matches."""
    have_dns, have_ips = _sans(cert)
    diffs = [
        _set_diff("CN", set(_attrs(cert.subject, NameOID.COMMON_NAME)), {req.common_name}),
        _set_diff(
            "O", set(_attrs(cert.subject, NameOID.ORGANIZATION_NAME)), set(req.organizations)
        ),
        _set_diff(
            "SAN",
            {f"DNS:{d}" for d in have_dns} | {f"IP:{ip}" for ip in have_ips},
            {f"DNS:{d}" for d in req.dns_names} | {f"IP:{ip}" for ip in _wanted_ips(req)},
        ),
        _set_diff(
            "EKU",
            {_eku_name(o) for o in _ekus(cert)},
            {_eku_name(o) for o in _wanted_ekus(req)},
        ),
    ]
    found = [d for d in diffs if d]
    return "; ".join(found) if found else None


def _eku_name(oid: ObjectIdentifier) -> str:
    return _EKU_NAMES.get(oid, oid.dotted_string)


def _format_name(name: x509.Name) -> str:
    # CN first, then O, then anything else in certificate order: stable whatever the issuer's
    # attribute order (kubeadm puts O before CN).
    attrs = list(name)
    rank = {NameOID.COMMON_NAME: 0, NameOID.ORGANIZATION_NAME: 1}
    ordered = sorted(attrs, key=lambda a: rank.get(a.oid, 2))
    return ",".join(a.rfc4514_string() for a in ordered)


def _ip_key(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)


def describe_certificate(cert: x509.Certificate) -> str:
    """A deterministic one-line summary (subject, issuer, SANs, EKUs) for golden tests.

    Leaves out everything random: serial, validity dates and keys. DNS names are sorted
    alphabetically, then IP addresses numerically (IPv4 before IPv6); an absent SAN or EKU
    extension shows as ``none``.
    """
    san = _extension(cert, x509.SubjectAlternativeName)
    entries: list[str] = []
    if san is not None:
        entries += [f"DNS:{d}" for d in sorted(san.get_values_for_type(x509.DNSName))]
        ips = sorted(_san_ips(san), key=_ip_key)
        entries += [f"IP:{ip}" for ip in ips]
        entries += [
            f"URI:{u}" for u in sorted(san.get_values_for_type(x509.UniformResourceIdentifier))
        ]
        entries += [f"email:{e}" for e in sorted(san.get_values_for_type(x509.RFC822Name))]
    ekus = sorted(
        _ekus(cert),
        key=lambda o: (0, _EKU_ORDER.index(o), "") if o in _EKU_NAMES else (1, 0, o.dotted_string),
    )
    return (
        f"subject={_format_name(cert.subject)}; issuer={_format_name(cert.issuer)}; "
        f"san={','.join(entries) or 'none'}; eku={','.join(_eku_name(o) for o in ekus) or 'none'}"
    )
