"""Signing and verifying V2X messages as ETSI TS 103 097 secured data (IEEE 1609.2 SignedData).

``Signer`` wraps an outgoing payload (for GeoNetworking: the common header onwards) into an
EtsiTs103097Data-Signed; ``Verifier`` checks an incoming one and returns the payload, or
raises :class:`V2xSecurityError` with a stable ``reason`` and counts it. The C-OER layout
``Signer.sign`` produces::

    Ieee1609Dot2Data { protocolVersion 3, content signedData {
      hashId sha256,
      tbsData { payload { data Ieee1609Dot2Data { 3, unsecuredData <payload> } },
                headerInfo { psid, generationTime [, generationLocation] } },
      signer digest <HashedId8 of the ticket> | certificate { <authorization ticket> },
      signature ecdsaNistP256Signature { rSig x-only, sSig } } }

The signature is ECDSA P-256 with SHA-256 over SHA-256(tbsData) || SHA-256(ticket), the
IEEE 1609.2 rule; a digest signer hashes the ticket its digest names. See docs/v2x-security.md.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

from edge.v2x.certificates import (
    CAM_PSID,
    DENM_PSID,
    REASONS,
    Certificate,
    OerReader,
    OerWriter,
    V2xSecurityError,
    decode_certificate,
    load_authority_certificate,
    read_certificate,
    read_signature,
    signature_valid,
    write_signature,
)

__all__ = [
    "CAM_PSID",
    "DENM_PSID",
    "REASONS",
    "Location",
    "SecurityConfig",
    "Signer",
    "V2xSecurityError",
    "Verified",
    "Verifier",
    "encode_unsecured",
    "sign_data",
]

_PROTOCOL_VERSION: Final = 3
_CONTENT_NAMES: Final = ("unsecuredData", "signedData", "encryptedData", "signedCertificateRequest")
_UNSECURED, _SIGNED = 0, 1  # Ieee1609Dot2Content alternatives
_DIGEST, _CERTIFICATE = 0, 1  # SignerIdentifier alternatives


@dataclass(frozen=True)
class Location:
    """IEEE 1609.2 ThreeDLocation, a DENM's generationLocation, in the standard's integers.

    ``latitude``/``longitude`` in 1e-7 degrees (900000001 / 1800000001: unavailable);
    ``elevation`` is the 1609.2 Elevation, a Uint16 in decimetres (see the standard for its
    encoding of negative heights).
    """

    latitude: int
    longitude: int
    elevation: int

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("latitude", self.latitude, -900_000_000, 900_000_001),
            ("longitude", self.longitude, -1_799_999_999, 1_800_000_001),
            ("elevation", self.elevation, 0, 65_535),
        ):
            if not low <= value <= high:
                raise ValueError(f"generationLocation {name} {value} is outside {low} .. {high}")

    def write(self, writer: OerWriter) -> None:
        writer.sint(self.latitude, 4)
        writer.sint(self.longitude, 4)
        writer.uint(self.elevation, 2)

    @classmethod
    def read(cls, reader: OerReader) -> Location:
        latitude = reader.sint(4, "generationLocation latitude")
        longitude = reader.sint(4, "generationLocation longitude")
        elevation = reader.uint(2, "generationLocation elevation")
        try:
            return cls(latitude, longitude, elevation)
        except ValueError as error:
            raise reader.error(str(error)) from None


@dataclass(frozen=True)
class Verified:
    """What a verifier accepted. ``psid``, ``generation_time_us`` and ``signer_id`` (the
    HashedId8 of the signer's ticket) are None for a message accepted unsigned."""

    payload: bytes
    psid: int | None
    generation_time_us: int | None
    signer_id: bytes | None
    location: Location | None = None


def encode_unsecured(payload: bytes) -> bytes:
    """An Ieee1609Dot2Data carrying ``payload`` as unsecuredData (also a signed message's inner data)."""
    writer = OerWriter()
    writer.uint(_PROTOCOL_VERSION, 1)
    writer.tag(_UNSECURED)
    writer.octets(payload)
    return writer.getvalue()


def sign_data(
    private_key: ec.EllipticCurvePrivateKey,
    ticket: Certificate,
    payload: bytes,
    psid: int,
    generation_time_us: int,
    location: Location | None = None,
    *,
    with_certificate: bool = True,
) -> bytes:
    """Encode and sign one message, without any policy check (use :class:`Signer`)."""
    tbs = OerWriter()
    tbs.preamble(False, True, False)  # SignedDataPayload: extension, data, extDataHash
    tbs.raw(encode_unsecured(payload))
    # HeaderInfo: extension, generationTime, expiryTime, generationLocation,
    # p2pcdLearningRequest, missingCrlIdentifier, encryptionKey
    tbs.preamble(False, True, False, location is not None, False, False, False)
    tbs.unbounded_uint(psid)
    tbs.uint(generation_time_us, 8)
    if location is not None:
        location.write(tbs)
    to_be_signed = tbs.getvalue()

    data = OerWriter()
    data.uint(_PROTOCOL_VERSION, 1)
    data.tag(_SIGNED)
    data.uint(0, 1)  # hashId: sha256
    data.raw(to_be_signed)
    if with_certificate:
        data.tag(_CERTIFICATE)
        data.unbounded_uint(1)  # a SEQUENCE OF with exactly one certificate
        data.raw(ticket.encoded)
    else:
        data.tag(_DIGEST)
        data.raw(ticket.digest)
    write_signature(data, private_key, to_be_signed, ticket.encoded)
    return data.getvalue()


def _require_seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} s, got {value}")
    return float(value)


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class Signer:
    """Signs one station's outgoing messages with its authorization ticket.

    Per TS 103 097, a CAM carries the full ticket once every ``certificate_interval_s`` of
    generation time (and after :meth:`include_certificate_next`) and the ticket's digest
    otherwise; every other message (DENMs) carries the full ticket.
    """

    def __init__(
        self, private_key: ec.EllipticCurvePrivateKey, ticket: bytes, *, certificate_interval_s: float = 1.0
    ) -> None:
        try:
            self._ticket = decode_certificate(ticket)
        except V2xSecurityError as error:
            raise ValueError(f"ticket is not a usable certificate: {error}") from error
        if self._ticket.issuer is None:
            raise ValueError(
                "ticket is self-signed; sign with an authorization ticket issued by an authority"
            )
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not self._ticket.matches(private_key):
            raise ValueError("private key does not belong to the ticket's verification key")
        self._key = private_key
        self._interval_us = _us(
            _require_seconds("certificate_interval_s", certificate_interval_s, allow_zero=True)
        )
        self._last_certificate_us: int | None = None

    @property
    def signer_id(self) -> bytes:
        """HashedId8 of the ticket: what receivers see as ``Verified.signer_id``."""
        return self._ticket.digest

    def include_certificate_next(self) -> None:
        """Make the next CAM carry the full ticket (for example after hearing an unknown station)."""
        self._last_certificate_us = None

    def sign(
        self, payload: bytes, psid: int, generation_time_us: int, location: Location | None = None
    ) -> bytes:
        """The signed message for ``payload``; ``generation_time_us`` is Time64 (TAI µs since 2004)."""
        if psid not in self._ticket.app_psids:
            raise ValueError(f"the ticket permits PSIDs {sorted(self._ticket.app_psids)}, not {psid}")
        if not 0 <= generation_time_us < 2**64:
            raise ValueError(f"generation time {generation_time_us} µs is outside Time64 (0 .. 2**64-1)")
        if psid == DENM_PSID and location is None:
            raise ValueError("a DENM must carry its generationLocation (TS 103 097): pass location")
        with_certificate = psid != CAM_PSID or self._certificate_due(generation_time_us)
        if psid == CAM_PSID and with_certificate:
            self._last_certificate_us = generation_time_us
        return sign_data(
            self._key,
            self._ticket,
            bytes(payload),
            psid,
            generation_time_us,
            location,
            with_certificate=with_certificate,
        )

    def _certificate_due(self, now_us: int) -> bool:
        last = self._last_certificate_us
        return last is None or not last <= now_us < last + self._interval_us


@dataclass(frozen=True)
class SecurityConfig:
    """What a :class:`Verifier` accepts; checked on construction (TypeError/ValueError naming the field).

    ``trusted_authorities``: the C-OER certificates of the V2X roots whose tickets are trusted.
    ``replay_window_s``: how long accepted messages are remembered, and so the oldest
    generation time accepted. ``max_clock_skew_s``: how far a generation time may lie in
    the future. ``certificate_cache_size``: how many validated tickets are kept for
    digest-signed messages (least recently used dropped first).
    """

    trusted_authorities: Sequence[bytes]
    require_signed: bool = True
    replay_window_s: float = 10.0
    max_clock_skew_s: float = 1.0
    certificate_cache_size: int = 1024
    authorities: Mapping[bytes, Certificate] = field(init=False, repr=False, compare=False)
    """The decoded ``trusted_authorities`` by HashedId8."""

    def __post_init__(self) -> None:
        if isinstance(self.trusted_authorities, bytes | bytearray | str):
            raise TypeError("trusted_authorities must be a sequence of certificates, not a single value")
        certificates = tuple(self.trusted_authorities)
        if not certificates:
            raise ValueError("trusted_authorities is empty: no signed message could be accepted")
        authorities = {}
        for index, data in enumerate(certificates):
            if not isinstance(data, bytes):
                raise TypeError(f"trusted_authorities[{index}] must be bytes, got {type(data).__name__}")
            try:
                authority = load_authority_certificate(data)
            except ValueError as error:
                raise ValueError(f"trusted_authorities[{index}]: {error}") from error
            authorities[authority.digest] = authority
        if not isinstance(self.require_signed, bool):
            raise TypeError(f"require_signed must be true or false, got {self.require_signed!r}")
        _require_seconds("replay_window_s", self.replay_window_s, allow_zero=False)
        _require_seconds("max_clock_skew_s", self.max_clock_skew_s, allow_zero=True)
        size = self.certificate_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"certificate_cache_size must be a positive integer, got {size!r}")
        object.__setattr__(self, "trusted_authorities", certificates)
        object.__setattr__(self, "authorities", MappingProxyType(authorities))


class _SignedData(NamedTuple):
    payload: bytes
    psid: int
    generation_time_us: int
    expiry_time_us: int | None
    location: Location | None
    to_be_signed: bytes
    signer: bytes | Certificate  # a HashedId8, or the ticket itself
    signature: bytes


def _read_content(reader: OerReader, what: str) -> int:
    if (version := reader.uint(1, f"{what} protocolVersion")) != _PROTOCOL_VERSION:
        raise reader.error(f"{what} protocolVersion {version} is not {_PROTOCOL_VERSION}")
    content = reader.tag(f"{what} content")
    if content not in (_UNSECURED, _SIGNED):
        name = _CONTENT_NAMES[content] if content < len(_CONTENT_NAMES) else f"alternative {content}"
        raise reader.error(f"{what} content {name} is not supported")
    return content


def _decode(data: bytes) -> bytes | _SignedData:
    """An Ieee1609Dot2Data: the payload of unsecured data, or the parts of signed data."""
    reader = OerReader(data)
    if _read_content(reader, "message") == _UNSECURED:
        payload = reader.octets("unsecuredData")
        reader.end("message")
        return payload
    if reader.enumerated("hashId") != 0:
        raise reader.error("hashId: only sha256 is supported")
    tbs_start = reader.pos
    payload = _read_payload(reader)
    psid, generation_time, expiry_time, location = _read_header_info(reader)
    to_be_signed = reader.since(tbs_start)
    signer = _read_signer(reader)
    signature = read_signature(reader)
    reader.end("message")
    return _SignedData(payload, psid, generation_time, expiry_time, location, to_be_signed, signer, signature)


def _read_payload(reader: OerReader) -> bytes:
    extended, has_data, has_hash = reader.preamble(3, "payload")
    if not has_data or has_hash:
        raise reader.error("payload: only embedded data is supported (no extDataHash)")
    if _read_content(reader, "payload data") != _UNSECURED:
        raise reader.error("payload data: nested signed data is not supported")
    payload = reader.octets("payload unsecuredData")
    if extended:
        reader.skip_extensions("payload")
    return payload


def _read_header_info(reader: OerReader) -> tuple[int, int, int | None, Location | None]:
    extended, has_time, has_expiry, has_location, has_p2pcd, has_crl, has_key = reader.preamble(
        7, "headerInfo"
    )
    if has_crl or has_key:
        raise reader.error("headerInfo: missingCrlIdentifier and encryptionKey are not supported")
    psid = reader.unbounded_uint("headerInfo psid")
    if not has_time:
        raise reader.error("headerInfo has no generationTime, which TS 103 097 requires")
    generation_time = reader.uint(8, "generationTime")
    expiry_time = reader.uint(8, "expiryTime") if has_expiry else None
    location = Location.read(reader) if has_location else None
    if psid == DENM_PSID and location is None:
        raise reader.error("DENM headerInfo has no generationLocation, which TS 103 097 requires")
    if has_p2pcd:
        reader.take(3, "p2pcdLearningRequest")
    if extended:  # inlineP2pcdRequest, requestedCertificate, ...: covered by the signature, unused
        reader.skip_extensions("headerInfo")
    return psid, generation_time, expiry_time, location


def _read_signer(reader: OerReader) -> bytes | Certificate:
    choice = reader.tag("signer")
    if choice == _DIGEST:
        return reader.take(8, "signer digest")
    if choice != _CERTIFICATE:
        raise reader.error("signer: only digest and certificate are supported (TS 103 097 forbids self)")
    if (count := reader.quantity("signer certificates")) != 1:
        raise reader.error(f"signer has {count} certificates; TS 103 097 requires exactly one")
    return read_certificate(reader)


class _Chain(NamedTuple):
    ticket: Certificate
    authority: Certificate


class _TicketCache:
    """Validated tickets by HashedId8, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._chains: OrderedDict[bytes, _Chain] = OrderedDict()

    def get(self, digest: bytes) -> _Chain | None:
        chain = self._chains.get(digest)
        if chain is not None:
            self._chains.move_to_end(digest)
        return chain

    def add(self, chain: _Chain) -> None:
        self._chains[chain.ticket.digest] = chain
        if len(self._chains) > self._size:
            self._chains.popitem(last=False)


class _ReplayGuard:
    """(signer, generationTime) of accepted messages, forgotten once older than the window."""

    def __init__(self) -> None:
        self._seen: set[tuple[bytes, int]] = set()
        self._by_time: list[tuple[int, bytes]] = []

    def forget_before(self, cutoff_us: int) -> None:
        while self._by_time and self._by_time[0][0] < cutoff_us:
            time_us, signer = heapq.heappop(self._by_time)
            self._seen.discard((signer, time_us))

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return key in self._seen

    def add(self, key: tuple[bytes, int]) -> None:
        if key not in self._seen:
            self._seen.add(key)
            heapq.heappush(self._by_time, (key[1], key[0]))


_COUNTERS: Final = (*REASONS, "accepted", "accepted_unsigned")


class Verifier:
    """Checks incoming secured messages against a :class:`SecurityConfig`.

    ``counters`` maps every rejection reason, ``"accepted"`` (signed) and
    ``"accepted_unsigned"`` to a count. The verifier keeps the tickets it has validated, so
    that later digest-signed CAMs verify, and the (signer, generationTime) of accepted
    messages for the replay window. Not thread-safe: use it from one thread.
    """

    def __init__(self, config: SecurityConfig) -> None:
        self.config = config
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._tickets = _TicketCache(config.certificate_cache_size)
        self._replay = _ReplayGuard()
        self._window_us = _us(config.replay_window_s)
        self._skew_us = _us(config.max_clock_skew_s)

    def verify(self, data: bytes, now_us: int) -> Verified:
        """The accepted content of an Ieee1609Dot2Data; ``now_us`` is Time64 (TAI µs since 2004).

        Raises V2xSecurityError (and counts its reason) when the message is rejected.
        """
        return self._counted(lambda: self._verify(data, now_us))

    def accept_unsecured(self, payload: bytes) -> Verified:
        """For a packet that came without any security envelope (GeoNetworking next header 1)."""
        return self._counted(lambda: self._unsigned(payload))

    def _counted(self, check: Callable[[], Verified]) -> Verified:
        try:
            verified = check()
        except V2xSecurityError as error:
            self.counters[error.reason] += 1
            raise
        self.counters["accepted" if verified.signer_id is not None else "accepted_unsigned"] += 1
        return verified

    def _unsigned(self, payload: bytes) -> Verified:
        if self.config.require_signed:
            raise V2xSecurityError("unsigned", "the message is not signed and require_signed is set")
        return Verified(payload, None, None, None)

    def _verify(self, data: bytes, now_us: int) -> Verified:
        message = _decode(data)
        if isinstance(message, bytes):
            return self._unsigned(message)
        self._check_time(message, now_us)
        ticket, authority = self._chain(message.signer)
        for what, certificate in (("authorization ticket", ticket), ("authority certificate", authority)):
            validity = certificate.validity
            if not validity.contains(now_us):
                raise V2xSecurityError(
                    "expired_certificate",
                    f"{what} {certificate.digest.hex()} is valid from {validity.start_s} "
                    f"to {validity.end_s} s, now is {now_us / 1e6:.3f} s (TAI since 2004)",
                )
        if message.psid not in ticket.app_psids:
            raise V2xSecurityError(
                "psid_not_permitted",
                f"ticket {ticket.digest.hex()} permits PSIDs {sorted(ticket.app_psids)}, not {message.psid}",
            )
        key = (ticket.digest, message.generation_time_us)
        if key in self._replay:
            raise V2xSecurityError(
                "replay",
                f"signer {ticket.digest.hex()} already sent generationTime {message.generation_time_us}",
            )
        if not signature_valid(ticket.public_key, message.signature, message.to_be_signed, ticket.encoded):
            raise V2xSecurityError(
                "bad_signature", f"signature does not verify with ticket {ticket.digest.hex()}"
            )
        self._replay.add(key)
        return Verified(
            message.payload, message.psid, message.generation_time_us, ticket.digest, message.location
        )

    def _check_time(self, message: _SignedData, now_us: int) -> None:
        cutoff_us = now_us - self._window_us
        self._replay.forget_before(cutoff_us)
        generated = message.generation_time_us
        if generated < cutoff_us:
            raise V2xSecurityError(
                "too_old",
                f"generated {(now_us - generated) / 1e6:.3f} s ago, beyond the "
                f"{self.config.replay_window_s} s replay window",
            )
        if generated > now_us + self._skew_us:
            raise V2xSecurityError(
                "future",
                f"generated {(generated - now_us) / 1e6:.3f} s in the future, beyond the "
                f"{self.config.max_clock_skew_s} s clock skew allowed",
            )
        if message.expiry_time_us is not None and message.expiry_time_us < now_us:
            raise V2xSecurityError("too_old", f"expiryTime {message.expiry_time_us} µs has passed")

    def _chain(self, signer: bytes | Certificate) -> _Chain:
        if isinstance(signer, bytes):
            chain = self._tickets.get(signer)
            if chain is None:
                raise V2xSecurityError(
                    "unknown_signer", f"no certificate with digest {signer.hex()} has been seen yet"
                )
            return chain
        chain = self._tickets.get(signer.digest)
        if chain is None:
            chain = _Chain(signer, self._issuer_of(signer))
            self._tickets.add(chain)
        return chain

    def _issuer_of(self, ticket: Certificate) -> Certificate:
        if ticket.issuer is None:
            raise V2xSecurityError(
                "untrusted_certificate", f"certificate {ticket.digest.hex()} is self-signed"
            )
        authority = self.config.authorities.get(ticket.issuer)
        if authority is None:
            raise V2xSecurityError(
                "untrusted_certificate",
                f"certificate {ticket.digest.hex()} was issued by {ticket.issuer.hex()}, "
                "not a trusted authority",
            )
        if not ticket.issued_by(authority):
            raise V2xSecurityError(
                "untrusted_certificate",
                f"the signature of certificate {ticket.digest.hex()} does not verify with authority "
                f"{authority.digest.hex()}",
            )
        return authority
