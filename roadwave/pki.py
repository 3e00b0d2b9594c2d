"""The fleet's X.509 PKI: a CA that issues, revokes and lists the certificates of MQTT parties.

Every party on the broker is known by the Common Name of its certificate (Mosquitto's
``use_identity_as_username``): a vehicle by its VIN, a partner or a service by its id, the
broker by its host name. The role (:data:`ROLES`) is written in the Organizational Unit and
in the extended key usage: parties get ``clientAuth``, the broker ``serverAuth`` only, so a
broker certificate cannot log in as a client. Keys are ECDSA on NIST P-256.

A key is made where it will be used when possible: :func:`create_request` runs on the
vehicle and :meth:`FleetPki.issue_from_request` signs the request on the CA's machine, so
the key never travels. :meth:`FleetPki.issue` makes the key on the CA's machine for parties
that cannot (it then belongs in the bundle handed over, and nowhere else).

Layout of a PKI directory::

    ca/ca.pem                    the CA certificate (public; every party trusts it)
    ca/ca.key                    the CA key (0600, folder 0700; encrypted if a passphrase is given)
    issued/{identity}/cert.pem   the identity's latest certificate
    issued/{identity}/key.pem    its key, only if made here (0600, folder 0700)
    issued/{identity}/ca.pem     the CA certificate: the folder is a complete bundle
    issued/{identity}/{serial}.pem  every certificate issued to the identity
    crl.pem                      the revocation list the broker loads (signed by the CA)
    index.json                   every certificate issued: serial, role, identity, validity, revocation

Serial numbers are random 159-bit integers (RFC 5280: positive, at most 20 octets),
written in upper-case hexadecimal. Validity starts :data:`CLOCK_SKEW` early so that a
device whose clock runs a little behind accepts a fresh certificate or CRL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from roadwave.contract import ContractError, check_vin

VEHICLE: Final = "vehicle"
PARTNER: Final = "partner"
SERVICE: Final = "service"
BROKER: Final = "broker"
#: Roles that connect to the broker as clients.
CLIENT_ROLES: Final = (VEHICLE, PARTNER, SERVICE)
ROLES: Final = (*CLIENT_ROLES, BROKER)
#: Partner and service ids: lower case first, so that none can be mistaken for a VIN.
PARTY_ID_PATTERN: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_PATTERN: Final = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")

CA_DAYS: Final = 3650
CERT_DAYS: Final = 365
#: A CRL past its next update makes OpenSSL refuse every client: reissue it well before.
CRL_DAYS: Final = 30
CLOCK_SKEW: Final = dt.timedelta(minutes=5)
#: Names every broker certificate carries, so that local clients can check it.
BROKER_LOCAL_NAMES: Final = ("localhost", "127.0.0.1")
#: Reasons accepted by :meth:`FleetPki.revoke` (RFC 5280 CRLReason names).
REVOCATION_REASONS: Final = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
INDEX_VERSION: Final = 1


class PkiError(ValueError):
    """A PKI operation was refused or its files are unusable; the message says why and what to do."""


def check_identity(role: str, identity: str) -> str:
    """Return ``identity`` if it is a valid Common Name for ``role``, else raise :class:`PkiError`."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role == VEHICLE:
        try:
            return check_vin(identity)
        except ContractError as exc:
            raise PkiError(f"vehicle identity: {exc}") from exc
    pattern = HOSTNAME_PATTERN if role == BROKER else PARTY_ID_PATTERN
    if not isinstance(identity, str) or not pattern.fullmatch(identity):
        rule = "a lower-case host name" if role == BROKER else "1-64 of a-z 0-9 _ -, starting with a letter"
        raise PkiError(f"invalid {role} identity {identity!r}: use {rule}")
    return identity


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate the CA issued, as recorded in the index."""

    serial: int
    role: str
    identity: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    revoked_at: dt.datetime | None = None
    reason: str | None = None

    @property
    def serial_hex(self) -> str:
        """The serial number as written in file names and listings."""
        return f"{self.serial:X}"

    def status(self, now: dt.datetime | None = None) -> str:
        """``revoked``, ``expired`` or ``valid`` at ``now`` (default: the current time)."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if (now or _now()) >= self.not_after else "valid"

    def as_json(self) -> dict[str, Any]:
        """The index record (also what ``roadwave pki list --json`` prints)."""
        return {
            "serial": self.serial_hex,
            "role": self.role,
            "identity": self.identity,
            "not_before": iso_time(self.not_before),
            "not_after": iso_time(self.not_after),
            "sha256": self.sha256,
            "revoked_at": None if self.revoked_at is None else iso_time(self.revoked_at),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> IssuedCertificate:
        """Read an index record."""
        revoked = record.get("revoked_at")
        return cls(
            serial=int(record["serial"], 16),
            role=record["role"],
            identity=record["identity"],
            not_before=_parse_iso(record["not_before"]),
            not_after=_parse_iso(record["not_after"]),
            sha256=record["sha256"],
            revoked_at=None if revoked is None else _parse_iso(revoked),
            reason=record.get("reason"),
        )


@dataclass(frozen=True)
class Bundle:
    """The files a party needs to connect: its certificate, its key (if made here), the CA."""

    cert_file: Path
    key_file: Path | None
    ca_file: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso_time(moment: dt.datetime) -> str:
    """A moment as written in the index: ISO 8601, UTC, whole seconds."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _check_days(days: int, what: str) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PkiError(f"{what} must be a whole number of days >= 1, got {days!r}")
    return days


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically with permissions ``mode`` from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits, never added any
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> None:
    """Write a private key as PKCS#8 PEM (encrypted with ``passphrase`` if given), mode 0600."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_file_atomically(path, pem, 0o600)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _subject_alternative_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses from their text form, each checked."""
    result: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not HOSTNAME_PATTERN.fullmatch(name):
            raise PkiError(f"broker name {name!r} is neither an IP address nor a lower-case host name")
        result.append(x509.DNSName(name))
    return result


def _name_constraints(permitted: Sequence[str]) -> x509.NameConstraints:
    subtrees: list[x509.GeneralName] = []
    for name in dict.fromkeys(permitted):
        try:
            subtrees.append(x509.IPAddress(ipaddress.ip_network(name, strict=True)))
            continue
        except ValueError:
            pass
        if not HOSTNAME_PATTERN.fullmatch(name):
            raise PkiError(
                f"permitted name {name!r} is neither an IP network (10.0.0.0/8) nor a lower-case DNS domain"
            )
        subtrees.append(x509.DNSName(name))
    return x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None)


def _within(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    """Whether a DNS name or IP address lies inside a permitted subtree (RFC 5280 4.2.1.10)."""
    if isinstance(name, x509.DNSName) and isinstance(subtree, x509.DNSName):
        return name.value == subtree.value or name.value.endswith("." + subtree.value)
    if isinstance(name, x509.IPAddress) and isinstance(subtree, x509.IPAddress):
        network = subtree.value
        return isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) and name.value in network
    return False


def _check_constraints(names: Sequence[x509.GeneralName], constraints: x509.NameConstraints) -> None:
    """Refuse names that the CA's name constraints would make every verifier reject."""
    subtrees = constraints.permitted_subtrees or []
    for name in names:
        same_type = [subtree for subtree in subtrees if type(subtree) is type(name)]
        if same_type and not any(_within(name, subtree) for subtree in same_type):
            allowed = ", ".join(str(subtree.value) for subtree in same_type)
            raise PkiError(
                f"broker name {name.value} is outside the CA's permitted names ({allowed}); "
                f"the broker's certificate would be rejected"
            )


def create_request(role: str, identity: str, key_file: Path, request_file: Path) -> None:
    """Make a P-256 key (0600) and a certificate signing request for ``identity``.

    Runs on the party's own machine: the request goes to the CA, the key stays. An
    existing ``key_file`` is never overwritten (it may be the key in use).
    """
    check_identity(role, identity)
    key_file, request_file = Path(key_file), Path(request_file)
    if key_file.exists():
        raise PkiError(f"{key_file} exists: it may be the key in use; choose another path for the new key")
    key = _new_key()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .sign(key, hashes.SHA256())
    )
    write_private_key(key_file, key)
    write_file_atomically(request_file, request.public_bytes(serialization.Encoding.PEM), 0o644)


class FleetPki:
    """A PKI directory (see the module docstring): its CA, index, issued bundles and CRL.

    ``passphrase`` decrypts (and, at :meth:`init`, encrypts) the CA key. Changes hold an
    exclusive lock on the index, so two commands on one directory cannot interleave.
    """

    def __init__(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        self.directory = Path(directory)
        self._passphrase = passphrase
        for path in (self.ca_file, self.ca_key_file, self.index_file):
            if not path.is_file():
                raise PkiError(
                    f"{self.directory} is not a fleet PKI ({path.name} missing): "
                    f"create one with `roadwave pki init --dir {self.directory}`"
                )
        self.ca_certificate = self._load_certificate(self.ca_file)

    # --- layout ----------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM)."""
        return self.directory / "ca" / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The CA private key (PEM, 0600)."""
        return self.directory / "ca" / "ca.key"

    @property
    def crl_file(self) -> Path:
        """The certificate revocation list (PEM) the broker loads."""
        return self.directory / "crl.pem"

    @property
    def index_file(self) -> Path:
        """The record of every certificate issued."""
        return self.directory / "index.json"

    def identity_dir(self, identity: str) -> Path:
        """The bundle folder of ``identity``."""
        return self.directory / "issued" / identity

    # --- creating the CA ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        name: str = "roadwave fleet CA",
        days: int = CA_DAYS,
        permitted_names: Sequence[str] = (),
        passphrase: bytes | None = None,
    ) -> FleetPki:
        """Create a CA in ``directory`` (which must not hold one) with an empty index and CRL.

        ``permitted_names`` (DNS domains, IP networks) become critical name constraints:
        the CA then cannot vouch for a broker outside them, even if its key leaks.
        """
        directory = Path(directory)
        _check_days(days, "the CA's validity")
        if not name or len(name) > 64 or any(ord(char) < 32 for char in name):
            raise PkiError(f"CA name {name!r} must be 1-64 printable characters")
        constraints = _name_constraints(permitted_names) if permitted_names else None
        if (directory / "ca").exists():
            raise PkiError(f"{directory / 'ca'} exists: this directory already holds a CA")
        _private_dir(directory / "ca")
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
        )
        if constraints is not None:
            builder = builder.add_extension(constraints, critical=True)
        certificate = builder.sign(key, hashes.SHA256())
        write_private_key(directory / "ca" / "ca.key", key, passphrase)
        write_file_atomically(directory / "ca" / "ca.pem", _pem(certificate), 0o644)
        write_file_atomically(directory / "index.json", _index_text(0, []), 0o644)
        pki = cls(directory, passphrase=passphrase)
        pki.write_crl()
        return pki

    # --- issuing -------------------------------------------------------------------------

    def issue(
        self,
        role: str,
        identity: str,
        *,
        days: int = CERT_DAYS,
        broker_names: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Make a key here and issue a certificate for it; writes the identity's bundle.

        ``broker_names`` (DNS names, IP addresses) are added to a broker certificate's
        names besides its identity and :data:`BROKER_LOCAL_NAMES`.
        """
        check_identity(role, identity)
        key = _new_key()
        with self._locked():
            issued = self._issue(key.public_key(), role, identity, days, broker_names)
            write_private_key(self.identity_dir(identity) / "key.pem", key)
        return issued

    def issue_from_request(
        self,
        request_pem: bytes,
        role: str,
        *,
        identity: str | None = None,
        days: int = CERT_DAYS,
        broker_names: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Issue a certificate for the key of a signing request (see :func:`create_request`).

        Only the request's Common Name and public key are used; everything else in the
        certificate is the CA's choice. ``identity``, if given, must equal the Common Name.
        A key of an earlier bundle of the identity is removed: it does not belong to the
        new certificate.
        """
        try:
            request = x509.load_pem_x509_csr(request_pem)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate signing request: {exc}") from exc
        if not request.is_signature_valid:
            raise PkiError("the signing request's signature does not verify: it was altered or is corrupt")
        public_key = request.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise PkiError(
                "the signing request's key is not an ECDSA P-256 key; make one with `roadwave pki request`"
            )
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1:
            raise PkiError(f"the signing request must name exactly one Common Name, it names {len(names)}")
        common_name = str(names[0].value)
        if identity is not None and identity != common_name:
            raise PkiError(f"the signing request is for {common_name!r}, not {identity!r}")
        check_identity(role, common_name)
        with self._locked():
            issued = self._issue(public_key, role, common_name, days, broker_names)
            (self.identity_dir(common_name) / "key.pem").unlink(missing_ok=True)
        return issued

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        role: str,
        identity: str,
        days: int,
        broker_names: Sequence[str],
    ) -> IssuedCertificate:
        _check_days(days, "the certificate's validity")
        if broker_names and role != BROKER:
            raise PkiError("host names and IP addresses go into broker certificates only")
        crl_number, records = self._read_index()
        now = _now()
        for record in records:
            if record.identity == identity and record.role != role and record.status(now) == "valid":
                raise PkiError(
                    f"{identity!r} already holds a valid {record.role} certificate "
                    f"(serial {record.serial_hex}); revoke it before issuing a {role} one"
                )
        ca = self.ca_certificate
        not_after = now + dt.timedelta(days=days)
        if not_after > ca.not_valid_after_utc:
            raise PkiError(
                f"a certificate valid for {days} days would outlive the CA, which expires on "
                f"{iso_time(ca.not_valid_after_utc)}; give fewer days or create a new CA"
            )
        used = {record.serial for record in records}
        serial = x509.random_serial_number()
        while serial in used:
            serial = x509.random_serial_number()
        server = role == BROKER
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, identity),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    ]
                )
            )
            .issuer_name(ca.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        if server:
            names = _subject_alternative_names([identity, *BROKER_LOCAL_NAMES, *broker_names])
            with contextlib.suppress(x509.ExtensionNotFound):
                constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
                _check_constraints(names, constraints)
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._ca_key(), hashes.SHA256())
        issued = IssuedCertificate(
            serial=serial,
            role=role,
            identity=identity,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        )
        folder = self.identity_dir(identity)
        _private_dir(folder)
        pem = _pem(certificate)
        write_file_atomically(folder / f"{issued.serial_hex}.pem", pem, 0o644)
        write_file_atomically(folder / "cert.pem", pem, 0o644)
        write_file_atomically(folder / "ca.pem", self.ca_file.read_bytes(), 0o644)
        self._write_index(crl_number, [*records, issued])
        return issued

    # --- revoking ------------------------------------------------------------------------

    def revoke(self, serial: int, reason: str = "unspecified") -> IssuedCertificate:
        """Revoke one certificate and rewrite the CRL; returns the updated record."""
        return self._revoke(
            lambda record: record.serial == serial, reason, f"certificate with serial {serial:X}"
        )[0]

    def revoke_identity(self, identity: str, reason: str = "unspecified") -> list[IssuedCertificate]:
        """Revoke every valid certificate of ``identity`` and rewrite the CRL."""
        return self._revoke(
            lambda record: record.identity == identity and record.status() == "valid",
            reason,
            f"valid certificate of {identity!r}",
        )

    def _revoke(
        self, selected: Callable[[IssuedCertificate], bool], reason: str, what: str
    ) -> list[IssuedCertificate]:
        if reason not in REVOCATION_REASONS:
            raise PkiError(f"revocation reason {reason!r} is not one of {', '.join(REVOCATION_REASONS)}")
        now = _now()
        with self._locked():
            crl_number, records = self._read_index()
            chosen = [record for record in records if selected(record)]
            if not chosen:
                raise PkiError(f"the index holds no {what}: see `roadwave pki list`")
            already = [record for record in chosen if record.revoked_at is not None]
            if already:
                record = already[0]
                raise PkiError(
                    f"certificate {record.serial_hex} of {record.identity!r} was already revoked "
                    f"on {iso_time(record.revoked_at or now)}"
                )
            revoked = [replace(record, revoked_at=now, reason=reason) for record in chosen]
            by_serial = {record.serial: record for record in revoked}
            self._write_index(crl_number, [by_serial.get(record.serial, record) for record in records])
            self._write_crl_locked(CRL_DAYS)
        return revoked

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign a new CRL valid for ``days`` listing the revoked, unexpired certificates."""
        with self._locked():
            return self._write_crl_locked(days)

    def _write_crl_locked(self, days: int) -> Path:
        _check_days(days, "the CRL's validity")
        crl_number, records = self._read_index()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_certificate.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(crl_number + 1), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for record in records:
            if record.revoked_at is None or record.not_after <= now:
                continue  # expired certificates may leave the list (RFC 5280 3.3)
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(record.serial)
                .revocation_date(record.revoked_at)
            )
            if record.reason not in (None, "unspecified"):
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags(record.reason)), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self._ca_key(), hashes.SHA256())
        write_file_atomically(self.crl_file, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        self._write_index(crl_number + 1, records)
        return self.crl_file

    def crl(self) -> x509.CertificateRevocationList:
        """The current CRL, parsed."""
        try:
            return x509.load_pem_x509_crl(self.crl_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"{self.crl_file}: cannot read the CRL ({exc}); run `roadwave pki crl`") from exc

    # --- reading -------------------------------------------------------------------------

    def certificates(self) -> list[IssuedCertificate]:
        """Every certificate issued, oldest first."""
        return self._read_index()[1]

    def bundle(self, identity: str) -> Bundle:
        """The files of ``identity``'s latest certificate; raises if none was issued."""
        folder = self.identity_dir(identity)
        if not (folder / "cert.pem").is_file():
            raise PkiError(f"no certificate was issued to {identity!r} in {self.directory}")
        key = folder / "key.pem"
        return Bundle(folder / "cert.pem", key if key.is_file() else None, folder / "ca.pem")

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self.ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), self._passphrase)
        except TypeError as exc:  # encrypted without a passphrase, or the other way round
            raise PkiError(f"{self.ca_key_file}: {exc}") from exc
        except ValueError as exc:
            raise PkiError(
                f"{self.ca_key_file}: cannot load the CA key: wrong passphrase or damaged"
            ) from exc
        except OSError as exc:
            raise PkiError(f"{self.ca_key_file}: cannot read the CA key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key_file}: not an ECDSA key")
        return key

    @staticmethod
    def _load_certificate(path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise PkiError(f"{path}: not a readable PEM certificate: {exc}") from exc

    def _read_index(self) -> tuple[int, list[IssuedCertificate]]:
        try:
            document = json.loads(self.index_file.read_text(encoding="utf-8"))
            if document.get("version") != INDEX_VERSION:
                version = document.get("version")
                raise PkiError(f"{self.index_file}: index version {version!r}, expected {INDEX_VERSION}")
            records = [IssuedCertificate.from_json(item) for item in document["certificates"]]
            return int(document["crl_number"]), records
        except PkiError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PkiError(f"{self.index_file}: unreadable or damaged index ({exc!r})") from exc

    def _write_index(self, crl_number: int, records: list[IssuedCertificate]) -> None:
        write_file_atomically(self.index_file, _index_text(crl_number, records), 0o644)


def _index_text(crl_number: int, records: list[IssuedCertificate]) -> bytes:
    document = {
        "version": INDEX_VERSION,
        "crl_number": crl_number,
        "certificates": [record.as_json() for record in records],
    }
    return (json.dumps(document, indent=2) + "\n").encode()
