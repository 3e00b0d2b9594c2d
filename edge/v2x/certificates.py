"""V2X certificates (ETSI TS 103 097 on IEEE 1609.2) and the C-OER subset they are written in.

A fleet provisions one roadwave "V2X root" key pair. Its self-signed certificate is the
trust anchor every verifier is configured with; the root issues each station an
authorization ticket: an explicit certificate holding the station's ECDSA P-256 public key,
the ITS-AIDs (PSIDs) it may sign for and its validity period.

Certificates are encoded with canonical OER (ITU-T X.696, C-OER), as IEEE 1609.2 requires.
``OerWriter`` and ``OerReader`` implement exactly the subset roadwave uses, and
:mod:`edge.v2x.security` builds signed messages with them. The reader is strict: it rejects
non-canonical encodings, lengths that run past the data and every feature outside the subset
(implicit certificates, regions, encryption keys, Brainpool curves, SHA-384), each as a
``malformed`` :class:`V2xSecurityError` saying what and where.

Times: ``Time32`` is TAI seconds and ``Time64`` TAI microseconds since 2004-01-01T00:00:00
UTC (the ITS epoch of :mod:`edge.v2x.timebase`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.v2x.errors import V2xError

CAM_PSID: Final = 36
"""ITS-AID of the CA basic service (CAM)."""
DENM_PSID: Final = 37
"""ITS-AID of the DEN basic service (DENM)."""

REASONS: Final = (
    "unsigned",
    "malformed",
    "unknown_signer",
    "untrusted_certificate",
    "bad_signature",
    "psid_not_permitted",
    "expired_certificate",
    "replay",
    "too_old",
    "future",
)
"""Every ``V2xSecurityError.reason``; stable, for counters and logs."""

_MAX_PSID: Final = 2**64 - 1  # the reader accepts integers of at most 8 bytes


class V2xSecurityError(V2xError):
    """A secured message or certificate was rejected; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown V2X security reason {reason!r}; expected one of {', '.join(REASONS)}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[V2xSecurityError], tuple[str, str]]:
        return type(self), (self.reason, self.detail)


class OerWriter:
    """Builds a C-OER encoding field by field; callers pass values already validated."""

    def __init__(self) -> None:
        self._out = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def raw(self, data: bytes) -> None:
        """Fixed-size octets (a fixed-size OCTET STRING, or an already encoded component)."""
        self._out += data

    def preamble(self, *present: bool) -> None:
        """A SEQUENCE's presence bitmap: the extension bit if any, then one bit per optional field."""
        bits = 0
        for flag in present:
            bits = bits << 1 | flag
        padding = -len(present) % 8
        self._out += (bits << padding).to_bytes((len(present) + padding) // 8, "big")

    def uint(self, value: int, size: int) -> None:
        """An integer constrained to 0 .. 2**(8*size)-1 (Uint8 .. Uint64, enumerations)."""
        self._out += value.to_bytes(size, "big")

    def sint(self, value: int, size: int) -> None:
        """An integer with a negative lower bound, in ``size`` bytes of two's complement."""
        self._out += value.to_bytes(size, "big", signed=True)

    def tag(self, index: int) -> None:
        """The tag of CHOICE alternative number ``index`` (context-specific class, below 63)."""
        self._out.append(0x80 | index)

    def length(self, size: int) -> None:
        """A length determinant: one byte below 128, else 0x80 | byte count and the length."""
        if size < 0x80:
            self._out.append(size)
            return
        width = (size.bit_length() + 7) // 8
        self._out.append(0x80 | width)
        self._out += size.to_bytes(width, "big")

    def octets(self, data: bytes) -> None:
        """A variable-size OCTET STRING or UTF8String: length, then the bytes."""
        self.length(len(data))
        self._out += data

    def unbounded_uint(self, value: int) -> None:
        """An integer without upper bound (Psid, a SEQUENCE OF quantity): length, minimal bytes."""
        self.octets(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


class OerReader:
    """Reads a C-OER encoding field by field; every problem raises a ``malformed`` error."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.pos = 0

    def error(self, detail: str) -> V2xSecurityError:
        return V2xSecurityError("malformed", f"{detail} (at byte {self.pos})")

    def _left(self) -> int:
        return len(self._data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self._left():
            raise self.error(f"{what} truncated: needs {size} bytes, {self._left()} left")
        chunk = self._data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def since(self, start: int) -> bytes:
        """The bytes read from ``start`` to here: the exact encoding of a component."""
        return self._data[start : self.pos]

    def end(self, what: str) -> None:
        if self._left():
            raise self.error(f"{self._left()} unexpected bytes after the {what}")

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def sint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big", signed=True)

    def enumerated(self, what: str) -> int:
        value = self.uint(1, what)
        if value & 0x80:
            raise self.error(f"{what}: enumerated value in long form is not supported")
        return value

    def preamble(self, count: int, what: str) -> list[bool]:
        width = (count + 7) // 8
        bits = self.uint(width, f"{what} presence bitmap")
        padding = 8 * width - count
        if bits & ((1 << padding) - 1):
            raise self.error(f"{what}: padding bits of the presence bitmap are not zero")
        bits >>= padding
        return [bool(bits >> (count - 1 - index) & 1) for index in range(count)]

    def tag(self, what: str) -> int:
        byte = self.uint(1, f"{what} choice tag")
        if byte & 0xC0 != 0x80 or byte & 0x3F == 0x3F:
            raise self.error(f"{what}: tag 0x{byte:02x} is not a context-specific tag below 63")
        return byte & 0x3F

    def length(self, what: str) -> int:
        first = self.uint(1, f"{what} length")
        if first < 0x80:
            size = first
        else:
            width = first & 0x7F
            if not 1 <= width <= 8:
                raise self.error(f"{what}: a length of {width} bytes is not supported")
            size = self.uint(width, f"{what} length")
            if size < 0x80 or size >> (8 * (width - 1)) == 0:
                raise self.error(f"{what}: length {size} is not in its shortest form")
        if size > self._left():
            raise self.error(f"{what}: length {size} runs past the {self._left()} bytes left")
        return size

    def octets(self, what: str) -> bytes:
        return self.take(self.length(what), what)

    def unbounded_uint(self, what: str) -> int:
        data = self.octets(what)
        if not 1 <= len(data) <= 8:
            raise self.error(f"{what}: an integer of {len(data)} bytes is not supported")
        if len(data) > 1 and data[0] == 0:
            raise self.error(f"{what}: integer has a leading zero byte")
        return int.from_bytes(data, "big")

    def quantity(self, what: str) -> int:
        """The element count of a SEQUENCE OF (each element takes at least one byte)."""
        count = self.unbounded_uint(f"{what} count")
        if count > self._left():
            raise self.error(f"{what}: {count} elements cannot fit in the {self._left()} bytes left")
        return count

    def skip_extensions(self, what: str) -> None:
        """Skip the extension additions of a SEQUENCE whose extension bit is set."""
        bitmap = self.octets(f"{what} extension bitmap")
        if len(bitmap) < 2 or bitmap[0] > 7 or bitmap[-1] & ((1 << bitmap[0]) - 1):
            raise self.error(f"{what}: invalid extension bitmap {bitmap.hex()}")
        present = sum(byte.bit_count() for byte in bitmap[1:])
        if not present:
            raise self.error(f"{what}: extension bit set but no extension present")
        for _ in range(present):
            self.octets(f"{what} extension")


def hashed_id8(certificate: bytes) -> bytes:
    """HashedId8 of a certificate: the last 8 bytes of the SHA-256 of its C-OER encoding."""
    return hashlib.sha256(certificate).digest()[-8:]


def _signing_input(to_be_signed: bytes, signer_certificate: bytes) -> bytes:
    # IEEE 1609.2: ECDSA-SHA256 over SHA-256(data) || SHA-256(signer's certificate), where the
    # signer's certificate is the empty string when the signer is self-signed.
    return hashlib.sha256(to_be_signed).digest() + hashlib.sha256(signer_certificate).digest()


def write_signature(
    writer: OerWriter, key: ec.EllipticCurvePrivateKey, to_be_signed: bytes, signer_certificate: bytes
) -> None:
    """Sign ``to_be_signed`` and write an ecdsaNistP256Signature (rSig x-only, sSig)."""
    r, s = decode_dss_signature(
        key.sign(_signing_input(to_be_signed, signer_certificate), ec.ECDSA(hashes.SHA256()))
    )
    writer.tag(0)  # Signature: ecdsaNistP256Signature
    writer.tag(0)  # rSig: x-only
    writer.uint(r, 32)
    writer.uint(s, 32)


def read_signature(reader: OerReader) -> bytes:
    """An ecdsaNistP256Signature with an x-only rSig, as a DER signature for ``cryptography``."""
    if reader.tag("signature") != 0:
        raise reader.error("signature: only ecdsaNistP256Signature is supported")
    if reader.tag("signature rSig") != 0:
        raise reader.error("signature rSig: only the x-only form is supported")
    r = reader.uint(32, "signature rSig")
    return encode_dss_signature(r, reader.uint(32, "signature sSig"))


def signature_valid(
    key: ec.EllipticCurvePublicKey, signature: bytes, to_be_signed: bytes, signer_certificate: bytes
) -> bool:
    """True when ``signature`` (DER) signs ``to_be_signed`` under the IEEE 1609.2 rule."""
    try:
        key.verify(signature, _signing_input(to_be_signed, signer_certificate), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _compressed_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)


def _write_public_key(writer: OerWriter, key: ec.EllipticCurvePublicKey) -> None:
    point = _compressed_point(key)
    writer.tag(0)  # VerificationKeyIndicator: verificationKey
    writer.tag(0)  # PublicVerificationKey: ecdsaNistP256
    writer.tag(point[0])  # the X9.62 prefix 2 / 3 is also the index of compressed-y-0 / -1
    writer.raw(point[1:])


def _read_public_key(reader: OerReader) -> ec.EllipticCurvePublicKey:
    if reader.tag("verifyKeyIndicator") != 0:
        raise reader.error("verifyKeyIndicator: only verificationKey is supported (no implicit certificates)")
    if reader.tag("verificationKey") != 0:
        raise reader.error("verificationKey: only ecdsaNistP256 is supported")
    form = reader.tag("ecdsaNistP256 point")
    if form in (2, 3):  # compressed-y-0, compressed-y-1
        point = bytes([form]) + reader.take(32, "ecdsaNistP256 point")
    elif form == 4:  # uncompressedP256
        point = b"\x04" + reader.take(64, "ecdsaNistP256 point")
    else:
        raise reader.error(f"ecdsaNistP256 point form {form} is not a public key")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise reader.error("verification key is not a point on the P-256 curve") from None


_DURATION_UNITS: Final = ((6, 31_556_952), (5, 216_000), (4, 3_600), (3, 60), (2, 1))
"""Duration CHOICE alternatives roadwave reads and writes, (index, seconds), largest first:
years (IEEE 1609.2 counts 31 556 952 s), sixtyHours, hours, minutes, seconds."""


@dataclass(frozen=True)
class Validity:
    """A certificate's validity period: from ``start_s`` (Time32) for ``duration_s`` seconds.

    The duration must be expressible as at most 65535 seconds, minutes, hours, sixty-hour
    periods or years, the units of the IEEE 1609.2 Duration (a week is 168 hours).
    """

    start_s: int
    duration_s: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_s < 2**32:
            raise ValueError(f"validity start {self.start_s} s is outside Time32 (0 .. 2**32-1)")
        if self.duration_s <= 0:
            raise ValueError(f"validity duration must be positive, got {self.duration_s} s")
        self._encoded_duration()

    @property
    def end_s(self) -> int:
        return self.start_s + self.duration_s

    def contains(self, time_us: int) -> bool:
        """Whether a Time64 instant lies in this period."""
        return self.start_s * 1_000_000 <= time_us < self.end_s * 1_000_000

    def covers(self, other: Validity) -> bool:
        return self.start_s <= other.start_s and other.end_s <= self.end_s

    def _encoded_duration(self) -> tuple[int, int]:
        for index, seconds in _DURATION_UNITS:
            count, rest = divmod(self.duration_s, seconds)
            if not rest and count <= 0xFFFF:
                return index, count
        raise ValueError(
            f"validity duration {self.duration_s} s is not a whole number of at most 65535 seconds, "
            "minutes, hours, sixty-hour periods or years"
        )

    def write(self, writer: OerWriter) -> None:
        index, count = self._encoded_duration()
        writer.uint(self.start_s, 4)
        writer.tag(index)
        writer.uint(count, 2)

    @classmethod
    def read(cls, reader: OerReader) -> Validity:
        start = reader.uint(4, "validityPeriod start")
        unit = dict(_DURATION_UNITS).get(reader.tag("validityPeriod duration"))
        if unit is None:
            raise reader.error("validityPeriod duration: only seconds to years are supported")
        count = reader.uint(2, "validityPeriod duration")
        if not count:
            raise reader.error("validityPeriod duration is zero")
        return cls(start, count * unit)


class _Subject(NamedTuple):
    name: str | None
    validity: Validity
    app_psids: frozenset[int]
    can_issue: bool
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Certificate:
    """A decoded explicit certificate: what verification needs, with its exact bytes."""

    encoded: bytes = field(repr=False)
    """The whole C-OER encoding, which ``digest`` and the signatures it makes cover."""
    digest: bytes
    """HashedId8 of ``encoded``: how signers and issued certificates refer to it."""
    to_be_signed: bytes = field(repr=False)
    issuer: bytes | None
    """HashedId8 of the issuing certificate; None when self-signed."""
    name: str | None
    validity: Validity
    app_psids: frozenset[int]
    can_issue: bool
    """Whether it carries certIssuePermissions (an authority)."""
    public_key: ec.EllipticCurvePublicKey = field(repr=False)
    signature: bytes = field(repr=False)

    def issued_by(self, authority: Certificate) -> bool:
        """Whether ``authority`` issued this certificate and its signature verifies."""
        return self.issuer == authority.digest and signature_valid(
            authority.public_key, self.signature, self.to_be_signed, authority.encoded
        )

    def matches(self, private_key: ec.EllipticCurvePrivateKey) -> bool:
        """Whether ``private_key`` belongs to this certificate's verification key."""
        return _compressed_point(private_key.public_key()) == _compressed_point(self.public_key)


def decode_certificate(data: bytes) -> Certificate:
    """Decode one C-OER certificate (nothing may follow it)."""
    reader = OerReader(data)
    certificate = read_certificate(reader)
    reader.end("certificate")
    return certificate


def read_certificate(reader: OerReader) -> Certificate:
    """Read an explicit EtsiTs103097Certificate at the reader's position."""
    start = reader.pos
    (has_signature,) = reader.preamble(1, "certificate")
    if (version := reader.uint(1, "certificate version")) != 3:
        raise reader.error(f"certificate version {version} is not 3")
    if reader.enumerated("certificate type") != 0:
        raise reader.error("certificate type: only explicit certificates are supported")
    issuer = _read_issuer(reader)
    tbs_start = reader.pos
    subject = _read_to_be_signed(reader)
    to_be_signed = reader.since(tbs_start)
    if not has_signature:
        raise reader.error("explicit certificate without a signature")
    signature = read_signature(reader)
    encoded = reader.since(start)
    return Certificate(encoded, hashed_id8(encoded), to_be_signed, issuer, *subject, signature=signature)


def _read_issuer(reader: OerReader) -> bytes | None:
    choice = reader.tag("issuer")
    if choice == 0:  # sha256AndDigest
        return reader.take(8, "issuer sha256AndDigest")
    if choice == 1:  # self
        if reader.enumerated("issuer self") != 0:
            raise reader.error("issuer self: only sha256 is supported")
        return None
    raise reader.error("issuer: only sha256AndDigest and self are supported")


def _read_to_be_signed(reader: OerReader) -> _Subject:
    extended, region, assurance, app, issue, request, _rollover, encryption = reader.preamble(8, "toBeSigned")
    unsupported = [
        what
        for what, present in (
            ("region", region),
            ("certRequestPermissions", request),
            ("encryptionKey", encryption),
            ("extensions", extended),
        )
        if present
    ]
    if unsupported:
        raise reader.error(f"certificate {', '.join(unsupported)}: not supported")
    name = _read_id(reader)
    reader.take(3, "cracaId")
    reader.take(2, "crlSeries")
    validity = Validity.read(reader)
    if assurance:
        reader.take(1, "assuranceLevel")
    psids = _read_app_permissions(reader) if app else frozenset[int]()
    can_issue = _read_issue_permissions(reader) if issue else False
    # canRequestRollover is a NULL: its presence bit is all there is.
    return _Subject(name, validity, psids, can_issue, _read_public_key(reader))


def _read_id(reader: OerReader) -> str | None:
    choice = reader.tag("certificate id")
    if choice == 3:  # none
        return None
    if choice != 1:
        raise reader.error("certificate id: only name and none are supported")
    raw = reader.octets("certificate name")
    if len(raw) > 255:
        raise reader.error(f"certificate name of {len(raw)} bytes is longer than 255")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise reader.error("certificate name is not UTF-8") from None


def _read_app_permissions(reader: OerReader) -> frozenset[int]:
    psids = set()
    for _ in range(reader.quantity("appPermissions")):
        (has_ssp,) = reader.preamble(1, "appPermissions entry")
        psids.add(reader.unbounded_uint("appPermissions psid"))
        if has_ssp:  # opaque, or bitmapSsp as an open type: both are length and bytes
            if reader.tag("ssp") not in (0, 1):
                raise reader.error("ssp: only opaque and bitmapSsp are supported")
            reader.octets("ssp")
    return frozenset(psids)


def _read_issue_permissions(reader: OerReader) -> bool:
    count = reader.quantity("certIssuePermissions")
    for _ in range(count):
        min_chain, chain_range, ee_type = reader.preamble(3, "certIssuePermissions entry")
        if reader.tag("subjectPermissions") != 1:
            raise reader.error("subjectPermissions: only all is supported")
        if min_chain:
            reader.octets("minChainLength")
        if chain_range:
            reader.octets("chainLengthRange")
        if ee_type:
            reader.take(1, "eeType")
    return count > 0


def _encode_certificate(
    *,
    signing_key: ec.EllipticCurvePrivateKey,
    issuer: Certificate | None,
    name: str | None,
    validity: Validity,
    psids: Iterable[int],
    public_key: ec.EllipticCurvePublicKey,
) -> bytes:
    """An explicit certificate; an authority when ``issuer`` is None (self-signed, may issue all)."""
    psids = tuple(psids)
    tbs = OerWriter()
    # extension, region, assuranceLevel, appPermissions, certIssuePermissions,
    # certRequestPermissions, canRequestRollover, encryptionKey
    tbs.preamble(False, False, False, bool(psids), issuer is None, False, False, False)
    if name is None:
        tbs.tag(3)  # id: none
    else:
        tbs.tag(1)  # id: name
        tbs.octets(name.encode())
    tbs.raw(bytes(3))  # cracaId 000000H and
    tbs.uint(0, 2)  # crlSeries 0, as TS 103 097 requires
    validity.write(tbs)
    if psids:
        tbs.unbounded_uint(len(psids))
        for psid in psids:
            tbs.preamble(False)  # no ssp
            tbs.unbounded_uint(psid)
    if issuer is None:
        tbs.unbounded_uint(1)  # one PsidGroupPermissions, default chain length and eeType:
        tbs.preamble(False, False, False)
        tbs.tag(1)  # subjectPermissions: all
    _write_public_key(tbs, public_key)
    to_be_signed = tbs.getvalue()

    certificate = OerWriter()
    certificate.preamble(True)  # signature present
    certificate.uint(3, 1)  # version
    certificate.uint(0, 1)  # type: explicit
    if issuer is None:
        certificate.tag(1)  # issuer: self,
        certificate.uint(0, 1)  # sha256
    else:
        certificate.tag(0)  # issuer: sha256AndDigest
        certificate.raw(issuer.digest)
    certificate.raw(to_be_signed)
    write_signature(certificate, signing_key, to_be_signed, b"" if issuer is None else issuer.encoded)
    return certificate.getvalue()


def load_authority_certificate(data: bytes) -> Certificate:
    """Decode a V2X root certificate and check it: self-signed, signature valid, may issue.

    Raises ValueError saying what is wrong.
    """
    try:
        certificate = decode_certificate(data)
    except V2xSecurityError as error:
        raise ValueError(f"not a usable authority certificate: {error}") from error
    if certificate.issuer is not None:
        raise ValueError(
            f"certificate {certificate.digest.hex()} is not self-signed, so it is not a root authority"
        )
    if not signature_valid(certificate.public_key, certificate.signature, certificate.to_be_signed, b""):
        raise ValueError(f"authority certificate {certificate.digest.hex()} has an invalid self-signature")
    if not certificate.can_issue:
        raise ValueError(f"authority certificate {certificate.digest.hex()} has no certIssuePermissions")
    return certificate


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise TypeError(f"{what} must be an elliptic-curve key from cryptography, got {type(key).__name__}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{what} is on {key.curve.name}; roadwave's V2X certificates use NIST P-256")


@dataclass(frozen=True)
class Authority:
    """A V2X root: its private key and self-signed certificate (checked on construction)."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: bytes = field(repr=False)
    decoded: Certificate = field(init=False)

    def __post_init__(self) -> None:
        _require_p256(self.private_key, "authority private key")
        decoded = load_authority_certificate(self.certificate)
        if not decoded.matches(self.private_key):
            raise ValueError("authority private key does not belong to the authority certificate")
        object.__setattr__(self, "decoded", decoded)


def generate_authority(
    validity: Validity, name: str = "roadwave V2X root", private_key: ec.EllipticCurvePrivateKey | None = None
) -> Authority:
    """Create a V2X root: a new P-256 key (or ``private_key``) and its self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1()) if private_key is None else private_key
    _require_p256(key, "authority private key")
    if len(name.encode()) > 255:
        raise ValueError(f"authority name {name!r} is longer than 255 UTF-8 bytes")
    certificate = _encode_certificate(
        signing_key=key, issuer=None, name=name, validity=validity, psids=(), public_key=key.public_key()
    )
    return Authority(key, certificate)


def issue_ticket(
    authority: Authority,
    station_public_key: ec.EllipticCurvePublicKey,
    validity: Validity,
    psids: Iterable[int] = (CAM_PSID, DENM_PSID),
) -> bytes:
    """An authorization ticket for a station's P-256 key, permitting ``psids``, as C-OER bytes."""
    _require_p256(station_public_key, "station public key")
    permitted = list(psids)
    if not permitted:
        raise ValueError("an authorization ticket needs at least one PSID")
    for psid in permitted:
        if isinstance(psid, bool) or not isinstance(psid, int) or not 0 <= psid <= _MAX_PSID:
            raise ValueError(f"PSID {psid!r} is not an integer in 0 .. 2**64-1")
    if len(set(permitted)) != len(permitted):
        raise ValueError(f"PSIDs {permitted} contain duplicates")
    if not authority.decoded.validity.covers(validity):
        raise ValueError(
            f"ticket validity {validity.start_s} .. {validity.end_s} s lies outside the authority's "
            f"{authority.decoded.validity.start_s} .. {authority.decoded.validity.end_s} s"
        )
    return _encode_certificate(
        signing_key=authority.private_key,
        issuer=authority.decoded,
        name=None,
        validity=validity,
        psids=sorted(permitted),
        public_key=station_public_key,
    )
