"""V2X security: ETSI TS 103 097 signing, verification, certificates and their C-OER encoding."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrate_asn1dir import ITS_IEEE1609_2

from edge.v2x.certificates import (
    Authority,
    Validity,
    decode_certificate,
    generate_authority,
    hashed_id8,
    issue_ticket,
)
from edge.v2x.errors import V2xError
from edge.v2x.security import (
    CAM_PSID,
    DENM_PSID,
    REASONS,
    Location,
    SecurityConfig,
    Signer,
    V2xSecurityError,
    Verified,
    Verifier,
    encode_unsecured,
    sign_data,
)

NOW_US = 700_000_000 * 10**6  # Time64: TAI microseconds since 2004, in 2026
AUTHORITY_VALIDITY = Validity(690_000_000, 2 * 8760 * 3600)  # two years of 8760 hours
TICKET_VALIDITY = Validity(699_900_000, 168 * 3600)  # one week around NOW_US
CAM_PAYLOAD = b"\x11\x00roadwave CAM body"
DENM_PAYLOAD = b"\x11\x00roadwave DENM body"
HERE = Location(latitude=485_012_345, longitude=90_054_321, elevation=4_500)
IEEE = ITS_IEEE1609_2.Ieee1609Dot2  # pycrate's compiled IEEE 1609.2 module: an independent codec


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


@pytest.fixture(scope="module")
def authority() -> Authority:
    return generate_authority(AUTHORITY_VALIDITY)


@pytest.fixture(scope="module")
def station_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def ticket(authority: Authority, station_key: ec.EllipticCurvePrivateKey) -> bytes:
    return issue_ticket(authority, station_key.public_key(), TICKET_VALIDITY, (CAM_PSID, DENM_PSID))


@pytest.fixture
def signer(station_key: ec.EllipticCurvePrivateKey, ticket: bytes) -> Signer:
    return Signer(station_key, ticket)


@pytest.fixture(scope="module")
def config(authority: Authority) -> SecurityConfig:
    return SecurityConfig([authority.certificate])


@pytest.fixture
def verifier(config: SecurityConfig) -> Verifier:
    return Verifier(config)


def assert_rejected(verifier: Verifier, data: bytes, reason: str, now_us: int = NOW_US) -> V2xSecurityError:
    """The message is rejected for ``reason``, and only that reason's counter moves."""
    before = dict(verifier.counters)
    with pytest.raises(V2xSecurityError) as info:
        verifier.verify(data, now_us)
    assert info.value.reason == reason, str(info.value)
    assert verifier.counters == {**before, reason: before[reason] + 1}
    return info.value


# --- round trips -------------------------------------------------------------------------


def test_signed_cam_round_trip(signer: Signer, verifier: Verifier, ticket: bytes) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    verified = verifier.verify(message, NOW_US + 20_000)
    assert verified == Verified(CAM_PAYLOAD, CAM_PSID, NOW_US, hashed_id8(ticket), None)
    assert signer.signer_id == hashed_id8(ticket)
    assert verifier.counters == {**dict.fromkeys(REASONS, 0), "accepted": 1, "accepted_unsigned": 0}


def test_signed_denm_round_trip_carries_the_generation_location(signer: Signer, verifier: Verifier) -> None:
    message = signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US, HERE)
    verified = verifier.verify(message, NOW_US)
    assert (verified.payload, verified.psid, verified.generation_time_us) == (DENM_PAYLOAD, DENM_PSID, NOW_US)
    assert verified.location == HERE


def test_cam_carries_the_ticket_once_per_second_and_its_digest_otherwise(
    signer: Signer, ticket: bytes
) -> None:
    messages = [signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US + step * 100_000) for step in range(12)]
    assert [ticket in message for message in messages] == [True] + [False] * 9 + [True, False]
    assert all(hashed_id8(ticket) in message for message in messages[1:10])
    # certificate: tag, count (2 bytes) and the ticket; digest: tag and 8 bytes
    assert len(messages[0]) - len(messages[1]) == len(ticket) + 2 - 8


def test_denm_always_carries_the_ticket(signer: Signer, ticket: bytes) -> None:
    first = signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US, HERE)
    second = signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US + 10_000, HERE)
    assert ticket in first and ticket in second


def test_include_certificate_next_puts_the_ticket_in_the_next_cam(signer: Signer, ticket: bytes) -> None:
    signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    assert ticket not in signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US + 100_000)
    signer.include_certificate_next()
    assert ticket in signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US + 200_000)


def test_digest_signed_cam_verifies_once_its_ticket_was_seen(signer: Signer, verifier: Verifier) -> None:
    with_ticket = signer.sign(b"first", CAM_PSID, NOW_US)
    with_digest = signer.sign(b"second", CAM_PSID, NOW_US + 100_000)
    assert_rejected(verifier, with_digest, "unknown_signer", NOW_US + 100_000)
    verifier.verify(with_ticket, NOW_US + 100_000)
    assert verifier.verify(with_digest, NOW_US + 100_000).payload == b"second"
    assert verifier.counters["accepted"] == 2


def test_ticket_cache_drops_the_least_recently_used(authority: Authority) -> None:
    verifier = Verifier(SecurityConfig([authority.certificate], certificate_cache_size=1))
    signers = []
    for _ in range(2):
        key = new_key()
        signers.append(Signer(key, issue_ticket(authority, key.public_key(), TICKET_VALIDITY)))
    for signer in signers:
        verifier.verify(signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US), NOW_US)
    later = NOW_US + 100_000
    assert verifier.verify(signers[1].sign(b"b", CAM_PSID, later), later).payload == b"b"
    assert_rejected(verifier, signers[0].sign(b"a", CAM_PSID, later), "unknown_signer", later)


# --- rejections --------------------------------------------------------------------------


def test_flipped_payload_bit_is_a_bad_signature(signer: Signer, verifier: Verifier) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    assert_rejected(verifier, flip(message, message.find(CAM_PAYLOAD) + 5), "bad_signature")


@pytest.mark.parametrize(
    "from_end", [1, 32, 33, 64], ids=["sSig-last", "sSig-first", "rSig-last", "rSig-first"]
)
def test_flipped_signature_bit_is_a_bad_signature(signer: Signer, verifier: Verifier, from_end: int) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    assert_rejected(verifier, flip(message, len(message) - from_end, 0x80), "bad_signature")


def test_flipped_generation_time_bit_is_a_bad_signature(signer: Signer, verifier: Verifier) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    time_at = message.find(NOW_US.to_bytes(8, "big"))
    assert_rejected(verifier, flip(message, time_at + 7), "bad_signature")  # 1 µs later: still in the window


@pytest.mark.parametrize("where", ["cracaId", "ticket signature"])
def test_flipped_ticket_bit_is_an_untrusted_certificate(
    signer: Signer, verifier: Verifier, ticket: bytes, where: str
) -> None:
    message = signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US, HERE)
    # The genuine ticket is cached first: the tampered one must not pass as it.
    verifier.verify(signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US - 1, HERE), NOW_US)
    tbs = decode_certificate(ticket).to_be_signed
    offset = ticket.find(tbs) + 2 if where == "cracaId" else len(ticket) - 1
    error = assert_rejected(verifier, flip(message, message.find(ticket) + offset), "untrusted_certificate")
    assert "does not verify with authority" in str(error)


def test_ticket_of_a_foreign_authority_is_untrusted(verifier: Verifier) -> None:
    foreign = generate_authority(AUTHORITY_VALIDITY, name="someone else's root")
    key = new_key()
    message = Signer(key, issue_ticket(foreign, key.public_key(), TICKET_VALIDITY)).sign(
        CAM_PAYLOAD, CAM_PSID, NOW_US
    )
    error = assert_rejected(verifier, message, "untrusted_certificate")
    assert foreign.decoded.digest.hex() in str(error)


def test_message_signed_by_the_authority_itself_is_untrusted(
    authority: Authority, verifier: Verifier
) -> None:
    message = sign_data(authority.private_key, authority.decoded, CAM_PAYLOAD, CAM_PSID, NOW_US)
    assert "self-signed" in str(assert_rejected(verifier, message, "untrusted_certificate"))


def test_psid_outside_the_ticket_is_not_permitted(authority: Authority, verifier: Verifier) -> None:
    key = new_key()
    cam_only = issue_ticket(authority, key.public_key(), TICKET_VALIDITY, psids=[CAM_PSID])
    with pytest.raises(ValueError, match=r"permits PSIDs \[36\], not 37"):
        Signer(key, cam_only).sign(DENM_PAYLOAD, DENM_PSID, NOW_US, HERE)
    forged = sign_data(key, decode_certificate(cam_only), DENM_PAYLOAD, DENM_PSID, NOW_US, HERE)
    assert_rejected(verifier, forged, "psid_not_permitted")


@pytest.mark.parametrize(
    "now_us",
    [TICKET_VALIDITY.end_s * 10**6, TICKET_VALIDITY.start_s * 10**6 - 1],
    ids=["expired", "not-yet-valid"],
)
def test_ticket_outside_its_validity_is_rejected(signer: Signer, verifier: Verifier, now_us: int) -> None:
    assert_rejected(verifier, signer.sign(CAM_PAYLOAD, CAM_PSID, now_us), "expired_certificate", now_us)


def test_ticket_outliving_its_authority_is_rejected_after_the_authority_expires() -> None:
    # issue_ticket refuses such a ticket; another issuer's tooling might not.
    short_lived = generate_authority(Validity(699_000_000, 278 * 3600))  # ends at 700_000_800 s
    station = new_key()
    ticket = _pycrate_ticket(short_lived, station, {"start": 699_990_000, "duration": ("hours", 24)})
    verifier = Verifier(SecurityConfig([short_lived.certificate]))
    assert verifier.verify(
        sign_data(station, decode_certificate(ticket), CAM_PAYLOAD, CAM_PSID, NOW_US), NOW_US
    )
    late = 700_000_800 * 10**6
    error = assert_rejected(
        verifier,
        sign_data(station, decode_certificate(ticket), CAM_PAYLOAD, CAM_PSID, late),
        "expired_certificate",
        late,
    )
    assert "authority certificate" in str(error)


def test_same_message_twice_is_a_replay(signer: Signer, verifier: Verifier) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    verifier.verify(message, NOW_US)
    assert_rejected(verifier, message, "replay", NOW_US + 500_000)


def test_same_signer_and_generation_time_is_a_replay(signer: Signer, verifier: Verifier) -> None:
    verifier.verify(signer.sign(b"original", CAM_PSID, NOW_US), NOW_US)
    assert_rejected(verifier, signer.sign(b"different payload", CAM_PSID, NOW_US), "replay")


def test_replayed_message_older_than_the_window_is_too_old(signer: Signer, verifier: Verifier) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    verifier.verify(message, NOW_US)
    assert_rejected(verifier, message, "too_old", NOW_US + 10 * 10**6 + 1)


@pytest.mark.parametrize(
    ("generated_us", "reason"),
    [
        (NOW_US - 10 * 10**6, None),  # exactly the 10 s replay window: accepted
        (NOW_US - 10 * 10**6 - 1, "too_old"),
        (NOW_US + 10**6, None),  # exactly the 1 s clock skew: accepted
        (NOW_US + 10**6 + 1, "future"),
    ],
)
def test_generation_time_window(
    signer: Signer, verifier: Verifier, generated_us: int, reason: str | None
) -> None:
    message = signer.sign(CAM_PAYLOAD, CAM_PSID, generated_us)
    if reason is None:
        assert verifier.verify(message, NOW_US).generation_time_us == generated_us
    else:
        assert_rejected(verifier, message, reason)


def test_unsigned_message_is_rejected_when_signing_is_required(verifier: Verifier) -> None:
    assert_rejected(verifier, encode_unsecured(CAM_PAYLOAD), "unsigned")
    with pytest.raises(V2xSecurityError, match="unsigned"):
        verifier.accept_unsecured(CAM_PAYLOAD)
    assert verifier.counters["unsigned"] == 2


def test_unsigned_message_is_accepted_when_signing_is_optional(authority: Authority, signer: Signer) -> None:
    verifier = Verifier(SecurityConfig([authority.certificate], require_signed=False))
    assert verifier.verify(encode_unsecured(CAM_PAYLOAD), NOW_US) == Verified(CAM_PAYLOAD, None, None, None)
    assert verifier.accept_unsecured(b"plain") == Verified(b"plain", None, None, None)
    assert verifier.verify(signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US), NOW_US).signer_id == signer.signer_id
    assert (verifier.counters["accepted_unsigned"], verifier.counters["accepted"]) == (2, 1)


def _cam(signer: Signer) -> bytes:
    return signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda m, t: b"", "truncated"),
        (lambda m, t: m[:-1], "truncated"),
        (lambda m, t: m + b"\x00", "1 unexpected bytes after the message"),
        (lambda m, t: b"\x02" + m[1:], "protocolVersion 2 is not 3"),
        (lambda m, t: b"\x03\x82" + m[2:], "content encryptedData is not supported"),
        (lambda m, t: b"\x03\x80\x84\xff\xff\xff\xff", "runs past"),
        (lambda m, t: b"\x03\x80\x81\x05hello", "not in its shortest form"),
        (lambda m, t: m[:2] + b"\x01" + m[3:], "hashId: only sha256"),
        (lambda m, t: flip(m, m.find(t) - 1, 0x03), "signer has 2 certificates"),
    ],
    ids=[
        "empty",
        "truncated",
        "trailing",
        "version",
        "encrypted",
        "huge-length",
        "long-form",
        "sha384",
        "two-certs",
    ],
)
def test_malformed_messages(signer: Signer, verifier: Verifier, ticket: bytes, mutate, detail: str) -> None:
    error = assert_rejected(verifier, mutate(_cam(signer), ticket), "malformed")
    assert detail in str(error)


def test_denm_without_generation_location_is_malformed(
    station_key: ec.EllipticCurvePrivateKey, ticket: bytes, verifier: Verifier
) -> None:
    message = sign_data(station_key, decode_certificate(ticket), DENM_PAYLOAD, DENM_PSID, NOW_US)
    assert "generationLocation" in str(assert_rejected(verifier, message, "malformed"))


# --- configuration and API errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        (lambda a, t: {"trusted_authorities": []}, ValueError, "trusted_authorities is empty"),
        (lambda a, t: {"trusted_authorities": a.certificate}, TypeError, "not a single value"),
        (
            lambda a, t: {"trusted_authorities": [t]},
            ValueError,
            r"trusted_authorities\[0\]: .* is not self-signed",
        ),
        (lambda a, t: {"trusted_authorities": [b"\x00"]}, ValueError, "not a usable authority certificate"),
        (
            lambda a, t: {"trusted_authorities": [flip(a.certificate, a.certificate.find(b"V2X root"))]},
            ValueError,
            "invalid self-signature",
        ),
        (
            lambda a, t: {"trusted_authorities": [bytearray(1)]},
            TypeError,
            r"trusted_authorities\[0\] must be bytes",
        ),
        (lambda a, t: {"require_signed": "yes"}, TypeError, "require_signed must be true or false"),
        (lambda a, t: {"replay_window_s": 0}, ValueError, r"replay_window_s must be > 0 s"),
        (
            lambda a, t: {"replay_window_s": float("nan")},
            TypeError,
            "replay_window_s must be a finite number",
        ),
        (lambda a, t: {"replay_window_s": "10"}, TypeError, "replay_window_s must be a finite number"),
        (lambda a, t: {"max_clock_skew_s": -0.1}, ValueError, r"max_clock_skew_s must be >= 0 s"),
        (
            lambda a, t: {"certificate_cache_size": 0},
            ValueError,
            "certificate_cache_size must be a positive integer",
        ),
    ],
)
def test_security_config_is_validated(authority: Authority, ticket: bytes, changes, error, match) -> None:
    with pytest.raises(error, match=match):
        SecurityConfig(**{"trusted_authorities": [authority.certificate], **changes(authority, ticket)})


def test_signer_is_validated(authority: Authority, station_key, ticket: bytes, signer: Signer) -> None:
    with pytest.raises(ValueError, match="does not belong to the ticket"):
        Signer(new_key(), ticket)
    with pytest.raises(ValueError, match="self-signed"):
        Signer(authority.private_key, authority.certificate)
    with pytest.raises(ValueError, match="not a usable certificate: malformed"):
        Signer(station_key, ticket[:-1])
    with pytest.raises(ValueError, match="certificate_interval_s must be >= 0"):
        Signer(station_key, ticket, certificate_interval_s=-1)
    with pytest.raises(ValueError, match="must carry its generationLocation"):
        signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US)
    with pytest.raises(ValueError, match="outside Time64"):
        signer.sign(CAM_PAYLOAD, CAM_PSID, -1)
    with pytest.raises(ValueError, match="latitude 900000002 is outside"):
        Location(900_000_002, 0, 0)


# --- certificates ----------------------------------------------------------------------------


def test_ticket_and_authority_decode_to_what_was_issued(
    authority: Authority, station_key, ticket: bytes
) -> None:
    root = decode_certificate(authority.certificate)
    assert (root.issuer, root.name, root.can_issue, root.app_psids) == (
        None,
        "roadwave V2X root",
        True,
        frozenset(),
    )
    assert root.validity == AUTHORITY_VALIDITY
    issued = decode_certificate(ticket)
    assert issued.issuer == hashlib.sha256(authority.certificate).digest()[-8:] == root.digest
    assert (issued.name, issued.can_issue, issued.app_psids) == (None, False, {CAM_PSID, DENM_PSID})
    assert issued.validity == TICKET_VALIDITY
    assert issued.matches(station_key) and issued.issued_by(root)
    assert issued.digest == hashed_id8(ticket) == hashlib.sha256(ticket).digest()[-8:]


@pytest.mark.parametrize("duration_s", [1, 65_535, 65_580, 604_800, 8760 * 3600, 31_556_952])
def test_validity_durations_round_trip(authority: Authority, duration_s: int) -> None:
    validity = Validity(695_000_000, duration_s)
    assert decode_certificate(issue_ticket(authority, new_key().public_key(), validity)).validity == validity


@pytest.mark.parametrize(
    ("start_s", "duration_s", "match"),
    [
        (-1, 60, "outside Time32"),
        (2**32, 60, "outside Time32"),
        (0, 0, "must be positive"),
        (0, 65_537, "not a whole number of at most 65535"),
    ],
)
def test_validity_is_validated(start_s: int, duration_s: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Validity(start_s, duration_s)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"validity": Validity(689_999_999, 3600)}, ValueError, "outside the authority's"),
        ({"psids": []}, ValueError, "at least one PSID"),
        ({"psids": [36, 36]}, ValueError, "duplicates"),
        ({"psids": [-1]}, ValueError, "not an integer in 0 .. 2\\*\\*64-1"),
        (
            {"station_public_key": ec.generate_private_key(ec.SECP384R1()).public_key()},
            ValueError,
            "secp384r1",
        ),
        ({"station_public_key": b"\x02" * 33}, TypeError, "must be an elliptic-curve key"),
    ],
)
def test_issue_ticket_is_validated(authority: Authority, kwargs, error, match) -> None:
    arguments = {"station_public_key": new_key().public_key(), "validity": TICKET_VALIDITY, **kwargs}
    with pytest.raises(error, match=match):
        issue_ticket(authority, **arguments)


def test_authority_key_must_match_its_certificate(authority: Authority) -> None:
    with pytest.raises(ValueError, match="does not belong to the authority certificate"):
        Authority(new_key(), authority.certificate)


def test_security_error_keeps_its_reason() -> None:
    error = V2xSecurityError("replay", "seen before")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail, str(copy)) == ("replay", "seen before", "replay: seen before")
    assert isinstance(error, V2xError)
    with pytest.raises(ValueError, match="unknown V2X security reason"):
        V2xSecurityError("nope", "x")


# --- an independent codec: pycrate's compiled IEEE 1609.2 module ------------------------------


def _pycrate_decode(type_, data: bytes) -> dict:
    type_.from_oer(data)
    return type_.get_val()


def _pycrate_encode(type_, value) -> bytes:
    type_.set_val(value)
    return type_.to_oer()


@pytest.mark.parametrize("kind", ["cam-certificate", "cam-digest", "denm"])
def test_pycrate_decodes_our_messages_and_re_encodes_the_same_bytes(
    signer: Signer, ticket: bytes, kind: str
) -> None:
    cam = signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US)
    message = {
        "cam-certificate": cam,
        "cam-digest": signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US + 100_000),
        "denm": signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US, HERE),
    }[kind]
    value = _pycrate_decode(IEEE.Ieee1609Dot2Data, message)
    assert _pycrate_encode(IEEE.Ieee1609Dot2Data, value) == message  # canonical: one encoding only

    assert value["protocolVersion"] == 3
    content, signed = value["content"]
    assert (content, signed["hashId"]) == ("signedData", "sha256")
    tbs = signed["tbsData"]
    header = tbs["headerInfo"]
    payload = DENM_PAYLOAD if kind == "denm" else CAM_PAYLOAD
    assert tbs["payload"]["data"] == {"protocolVersion": 3, "content": ("unsecuredData", payload)}
    assert header["psid"] == (DENM_PSID if kind == "denm" else CAM_PSID)
    assert header["generationTime"] == NOW_US + (100_000 if kind == "cam-digest" else 0)
    if kind == "denm":
        assert header["generationLocation"] == {
            "latitude": 485_012_345,
            "longitude": 90_054_321,
            "elevation": 4_500,
        }
    else:
        assert "generationLocation" not in header

    # Verify the signature from pycrate's view of the message, with hashlib and cryptography
    # only: SHA-256(tbsData) || SHA-256(ticket), ECDSA P-256 / SHA-256.
    signer_kind, signer_value = signed["signer"]
    if kind == "cam-digest":
        assert (signer_kind, signer_value) == ("digest", hashlib.sha256(ticket).digest()[-8:])
    else:
        assert signer_kind == "certificate" and len(signer_value) == 1
        assert _pycrate_encode(IEEE.CertificateBase, signer_value[0]) == ticket
    certificate = _pycrate_decode(IEEE.CertificateBase, ticket)
    _, (_, (form, x)) = certificate["toBeSigned"]["verifyKeyIndicator"]
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), {"compressed-y-0": b"\x02", "compressed-y-1": b"\x03"}[form] + x
    )
    signature_kind, signature = signed["signature"]
    assert signature_kind == "ecdsaNistP256Signature" and signature["rSig"][0] == "x-only"
    der = encode_dss_signature(
        int.from_bytes(signature["rSig"][1], "big"), int.from_bytes(signature["sSig"], "big")
    )
    tbs_bytes = _pycrate_encode(IEEE.ToBeSignedData, tbs)
    digest_input = hashlib.sha256(tbs_bytes).digest() + hashlib.sha256(ticket).digest()
    public_key.verify(der, digest_input, ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature if wrong


def test_pycrate_decodes_our_certificates(authority: Authority, ticket: bytes) -> None:
    root = _pycrate_decode(IEEE.CertificateBase, authority.certificate)
    assert _pycrate_encode(IEEE.CertificateBase, root) == authority.certificate
    assert (root["version"], root["type"], root["issuer"]) == (3, "explicit", ("self", "sha256"))
    assert root["toBeSigned"]["id"] == ("name", "roadwave V2X root")
    assert root["toBeSigned"]["certIssuePermissions"] == [{"subjectPermissions": ("all", 0)}]

    issued = _pycrate_decode(IEEE.CertificateBase, ticket)
    assert _pycrate_encode(IEEE.CertificateBase, issued) == ticket
    assert issued["issuer"] == ("sha256AndDigest", hashlib.sha256(authority.certificate).digest()[-8:])
    tbs = issued["toBeSigned"]
    assert (tbs["id"], tbs["cracaId"], tbs["crlSeries"]) == (("none", 0), b"\x00\x00\x00", 0)
    assert tbs["validityPeriod"] == {"start": 699_900_000, "duration": ("hours", 168)}
    assert tbs["appPermissions"] == [{"psid": CAM_PSID}, {"psid": DENM_PSID}]
    assert "certIssuePermissions" not in tbs


def _pycrate_signature(
    key: ec.EllipticCurvePrivateKey, to_be_signed: bytes, signer_certificate: bytes
) -> tuple:
    digest_input = hashlib.sha256(to_be_signed).digest() + hashlib.sha256(signer_certificate).digest()
    r, s = decode_dss_signature(key.sign(digest_input, ec.ECDSA(hashes.SHA256())))
    return (
        "ecdsaNistP256Signature",
        {"rSig": ("x-only", r.to_bytes(32, "big")), "sSig": s.to_bytes(32, "big")},
    )


def _pycrate_ticket(
    authority: Authority,
    station: ec.EllipticCurvePrivateKey,
    validity_period: dict,
    app_permissions: tuple = ({"psid": CAM_PSID}, {"psid": DENM_PSID}),
    assurance_level: bytes | None = None,
) -> bytes:
    """An authorization ticket encoded by pycrate (with an uncompressed key) and signed here."""
    point = station.public_key().public_numbers()
    key = {"x": point.x.to_bytes(32, "big"), "y": point.y.to_bytes(32, "big")}
    to_be_signed = {
        "id": ("none", 0),
        "cracaId": b"\x00\x00\x00",
        "crlSeries": 0,
        "validityPeriod": validity_period,
        **({"assuranceLevel": assurance_level} if assurance_level else {}),
        "appPermissions": list(app_permissions),
        "verifyKeyIndicator": ("verificationKey", ("ecdsaNistP256", ("uncompressedP256", key))),
    }
    signature = _pycrate_signature(
        authority.private_key,
        _pycrate_encode(IEEE.ToBeSignedCertificate, to_be_signed),
        authority.certificate,
    )
    certificate = {
        "version": 3,
        "type": "explicit",
        "issuer": ("sha256AndDigest", authority.decoded.digest),
        "toBeSigned": to_be_signed,
        "signature": signature,
    }
    return _pycrate_encode(IEEE.CertificateBase, certificate)


def test_we_verify_a_message_pycrate_encoded_with_fields_we_skip(
    authority: Authority, verifier: Verifier
) -> None:
    """Service-specific permissions, assuranceLevel, expiryTime, p2pcdLearningRequest, a header extension."""
    station = new_key()
    ticket = _pycrate_ticket(
        authority,
        station,
        {"start": 699_900_000, "duration": ("sixtyHours", 2)},
        (
            {"psid": CAM_PSID, "ssp": ("bitmapSsp", b"\x01\xff\xfc")},
            {"psid": DENM_PSID, "ssp": ("opaque", b"\x01")},
        ),
        assurance_level=b"\xe0",
    )
    assert decode_certificate(ticket).app_psids == {CAM_PSID, DENM_PSID}
    tbs = {
        "payload": {"data": {"protocolVersion": 3, "content": ("unsecuredData", CAM_PAYLOAD)}},
        "headerInfo": {
            "psid": CAM_PSID,
            "generationTime": NOW_US,
            "expiryTime": NOW_US + 5 * 10**6,
            "p2pcdLearningRequest": b"\xab\xcd\xef",
            "inlineP2pcdRequest": [b"\x01\x02\x03", b"\x04\x05\x06"],
        },
    }
    signed = {
        "hashId": "sha256",
        "tbsData": tbs,
        "signer": ("certificate", [_pycrate_decode(IEEE.CertificateBase, ticket)]),
        "signature": _pycrate_signature(station, _pycrate_encode(IEEE.ToBeSignedData, tbs), ticket),
    }
    message = _pycrate_encode(
        IEEE.Ieee1609Dot2Data, {"protocolVersion": 3, "content": ("signedData", signed)}
    )
    verified = verifier.verify(message, NOW_US)
    assert (verified.payload, verified.psid, verified.signer_id) == (
        CAM_PAYLOAD,
        CAM_PSID,
        hashed_id8(ticket),
    )
    assert_rejected(Verifier(verifier.config), flip(message, message.find(b"\x04\x05\x06")), "bad_signature")
    expired = NOW_US + 5 * 10**6 + 1
    assert "expiryTime" in str(assert_rejected(Verifier(verifier.config), message, "too_old", expired))


# --- robustness: arbitrary bytes only ever raise V2xSecurityError ------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_security_errors(config: SecurityConfig, data: bytes) -> None:
    verifier = Verifier(config)
    with pytest.raises(V2xSecurityError) as info:
        verifier.verify(data, NOW_US)
    assert sum(verifier.counters.values()) == 1 and verifier.counters[info.value.reason] == 1


@pytest.fixture(scope="module")
def samples(station_key: ec.EllipticCurvePrivateKey, ticket: bytes) -> list[bytes]:
    signer = Signer(station_key, ticket)
    return [
        signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US),
        signer.sign(CAM_PAYLOAD, CAM_PSID, NOW_US + 100_000),  # digest-signed
        signer.sign(DENM_PAYLOAD, DENM_PSID, NOW_US + 200_000, HERE),
    ]


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, max(0, len(data) - 1)))
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if operation == "flip" and data:
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[index] = draw(st.integers(0, 255))
        elif operation == "insert":
            data.insert(index, draw(st.integers(0, 255)))
        elif operation == "delete" and data:
            del data[index]
        elif operation == "truncate":
            del data[index:]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(choice=st.data())
def test_mutated_messages_are_never_accepted(config: SecurityConfig, samples: list[bytes], choice) -> None:
    original = choice.draw(st.sampled_from(samples))
    mutated = choice.draw(mutations(original))
    verifier = Verifier(config)
    verifier.verify(samples[0], NOW_US + 300_000)  # caches the ticket, so digest signers resolve
    try:
        verified = verifier.verify(mutated, NOW_US + 300_000)
    except V2xSecurityError as error:
        assert error.reason in REASONS
    else:
        assert mutated == original and verified.payload in (CAM_PAYLOAD, DENM_PAYLOAD)


@settings(max_examples=200, deadline=None)
@given(choice=st.data())
def test_mutated_certificates_decode_or_raise_malformed(ticket: bytes, choice) -> None:
    mutated = choice.draw(mutations(ticket))
    try:
        decoded = decode_certificate(mutated)
    except V2xSecurityError as error:
        assert error.reason == "malformed"
    else:
        assert decoded.encoded == mutated and decoded.digest == hashed_id8(mutated)
