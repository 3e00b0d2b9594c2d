"""Tolerant DBC loading: every quirk is worked around with a warning, or refused with file and line."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import cantools
import pytest

from edge.dbcload import DbcLoadError, LoadedDbc, load_dbc_files

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "dbc-samples"

BASE = """\
BO_ 100 Base: 8 ECU
 SG_ Speed : 0|16@1+ (0.01,0) [0|655.35] "km/h" TCU
 SG_ Gear : 16|4@1+ (1,0) [0|15] "" TCU
 SG_ Temp : 31|8@0- (1,0) [-128|127] "degC" TCU
"""
BASE_FRAME = bytes([0x34, 0x12, 0x05, 0xFD, 0, 0, 0, 0])
BASE_VALUES = {"Speed": 46.6, "Gear": 5, "Temp": -3}


def dbc(extra: str = "", nodes: str = "ECU TCU") -> str:
    """A small DBC: header, the Base message, then ``extra``."""
    return f'VERSION ""\n\nNS_ :\n    CM_\n    VAL_\n\nBS_:\n\nBU_: {nodes}\n\n{BASE}\n{extra}\n'


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first occurrence of ``fragment`` in ``text``."""
    return text[: text.index(fragment)].count("\n") + 1


def write(tmp_path: Path, text: str, name: str = "quirk.dbc") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def found(loaded: LoadedDbc) -> list[tuple[str, int]]:
    return [(w.code, w.line) for w in loaded.warnings]


def assert_base_decodes(loaded: LoadedDbc) -> None:
    values = loaded.database.decode_message(100, BASE_FRAME, decode_choices=False)
    assert values == pytest.approx(BASE_VALUES)


SIGNAL = '"" TCU'
QUIRKS = {
    "val-unknown-signal": ('VAL_ 100 Missing 0 "off" 1 "on" ;', "VAL_ 100 Missing"),
    "val-unknown-message": ('VAL_ 300 Speed 0 "stop" ;', "VAL_ 300"),
    "sig-valtype-unknown-signal": ("SIG_VALTYPE_ 100 Missing : 1;", "SIG_VALTYPE_"),
    "cm-unknown-signal": ('CM_ SG_ 100 Ghost "a comment on nothing";', "CM_ SG_"),
    "name-renamed": (f"BO_ 200 2ND_Status: 1 ECU\n SG_ Flag : 0|1@1+ (1,0) [0|1] {SIGNAL}", "BO_ 200"),
    "frame-id-extended": (
        f"BO_ 419361024 Load: 8 ECU\n SG_ Level : 8|8@1+ (0.4,0) [0|100] {SIGNAL}",
        "BO_ 4193",
    ),
    "signal-out-of-frame": (
        f"BO_ 200 Short: 2 ECU\n SG_ Low : 0|8@1+ (1,0) [0|255] {SIGNAL}\n"
        f" SG_ Beyond : 12|8@1+ (1,0) [0|255] {SIGNAL}",
        " SG_ Beyond",
    ),
    "signal-empty": (
        f"BO_ 200 Short: 2 ECU\n SG_ Low : 0|8@1+ (1,0) [0|255] {SIGNAL}\n"
        f" SG_ Nothing : 8|0@1+ (1,0) [0|0] {SIGNAL}",
        " SG_ Nothing",
    ),
    "message-duplicate-name": (f"BO_ 200 Base: 8 ECU\n SG_ Other : 0|8@1+ (1,0) [0|255] {SIGNAL}", "BO_ 200"),
    "message-duplicate-id": (BASE.replace("Base", "BaseAgain"), "BO_ 100 BaseAgain"),
    "signal-duplicate-name": (
        f"BO_ 200 Twice: 8 ECU\n SG_ Level : 0|8@1+ (1,0) [0|255] {SIGNAL}\n"
        f" SG_ Level : 8|8@1+ (1,0) [0|255] {SIGNAL}",
        " SG_ Level : 8",
    ),
    "signal-overlap": (
        f'BO_ 200 Shared: 8 ECU\n SG_ Torque : 0|12@1+ (1,0) [0|4095] "Nm" TCU\n'
        f" SG_ Decel : 8|8@1+ (0.1,0) [0|25.5] {SIGNAL}",
        " SG_ Decel",
    ),
    "unassigned-signals": (
        "BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX\n"
        ' SG_ Loose : 0|8@1+ (1,0) [0|255] "" Vector__XXX',
        "BO_ 3221225472",
    ),
    "ba-undefined-attribute": ('BA_ "GenMsgCycleTime" BO_ 100 10;', "BA_ "),
    "ba-def-def-undefined-attribute": ('BA_DEF_DEF_ "GenMsgCycleTime" 0;', "BA_DEF_DEF_"),
    "ba-def-unsupported": ('BA_DEF_ SGTYPE_ "TypeAttr" INT 0 10;', "BA_DEF_ SGTYPE_"),
    "ba-bad-value": (
        'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\nBA_ "GenMsgCycleTime" BO_ 100 "fast";',
        "BA_ ",
    ),
    "statement-unsupported": ('CAT_DEF_ 1 "Powertrain" 0;', "CAT_DEF_"),
}


@pytest.mark.parametrize("code", sorted(QUIRKS))
def test_each_quirk_loads_with_one_warning_and_strict_mode_refuses_it(tmp_path, code) -> None:
    extra, fragment = QUIRKS[code]
    text = dbc(extra)
    path = write(tmp_path, text)
    loaded = load_dbc_files([path])
    assert found(loaded) == [(code, line_of(text, fragment))]
    assert loaded.warnings[0].path == path
    assert_base_decodes(loaded)
    with pytest.raises(
        DbcLoadError, match=rf"quirk\.dbc:{line_of(text, fragment)}: .*\[{code}\] \(refused in strict mode\)"
    ):
        load_dbc_files([path], strict=True)


def test_duplicate_nodes_and_non_utf8_text_are_quirks_too(tmp_path) -> None:
    text = dbc('CM_ BO_ 100 "Geschwindigkeit über Grund";', nodes="ECU TCU ECU")
    path = tmp_path / "cp1252.dbc"
    path.write_bytes(text.encode("cp1252"))
    loaded = load_dbc_files([path])
    assert found(loaded) == [
        ("node-duplicate", line_of(text, "BU_")),
        ("encoding-fallback", line_of(text, "CM_ BO_")),
    ]
    assert [node.name for node in loaded.database.nodes] == ["ECU", "TCU"]
    assert loaded.database.get_message_by_name("Base").comment == "Geschwindigkeit über Grund"
    with pytest.raises(DbcLoadError, match="encoding-fallback"):
        load_dbc_files([path], strict=True)


def test_a_value_table_of_a_missing_signal_is_dropped_and_the_others_keep_their_labels(tmp_path) -> None:
    loaded = load_dbc_files([write(tmp_path, dbc('VAL_ 100 Gear 0 "P" 1 "R" ;\nVAL_ 100 Missing 1 "on" ;'))])
    assert [w.code for w in loaded.warnings] == ["val-unknown-signal"]
    assert "Missing" in loaded.warnings[0].message and "Base" in loaded.warnings[0].message
    assert loaded.database.decode_message(100, bytes([0, 0, 1, 0, 0, 0, 0, 0]))["Gear"] == "R"
    assert_base_decodes(loaded)


def test_names_cantools_cannot_parse_are_renamed_everywhere(tmp_path) -> None:
    text = dbc(
        "BO_ 200 2ND_Status: 2 1ECU\n"
        ' SG_ 4WD_Active : 0|1@1+ (1,0) [0|1] "" TCU\n'
        ' SG_ Öltemperatur : 8|8@1+ (1,-40) [-40|215] "degC" TCU\n'
        "BO_ 201 Other: 1 ECU\n"
        ' SG_ _4WD_Active : 0|8@1+ (1,0) [0|255] "" TCU\n'
        'CM_ SG_ 200 4WD_Active "four-wheel drive engaged";\n'
        'VAL_ 200 4WD_Active 0 "off" 1 "on" ;',
        nodes="ECU TCU 1ECU",
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [
        ("name-renamed", line_of(text, "BU_")),
        ("name-renamed", line_of(text, "BO_ 200")),
        ("name-renamed", line_of(text, " SG_ 4WD")),
        ("name-renamed", line_of(text, " SG_ Ö")),
    ]
    assert "'4WD_Active'" in loaded.warnings[2].message and "'__4WD_Active'" in loaded.warnings[2].message
    message = loaded.database.get_message_by_name("_2ND_Status")
    assert message.senders == ["_1ECU"]
    active = message.get_signal_by_name("__4WD_Active")
    assert active.comment == "four-wheel drive engaged" and active.choices == {0: "off", 1: "on"}
    assert message.decode(bytes([1, 0x64]), decode_choices=False) == {"__4WD_Active": 1, "Oltemperatur": 60}
    assert loaded.database.get_message_by_name("Other").signals[0].name == "_4WD_Active"


def test_an_extended_id_without_the_flag_is_read_as_29_bit_and_its_entries_follow(tmp_path) -> None:
    text = dbc(
        'BO_ 419361024 Load: 8 ECU\n SG_ Level : 8|8@1+ (0.4,0) [0|100] "%" TCU\n'
        'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\nBA_ "GenMsgCycleTime" BO_ 419361024 100;\n'
        'CM_ BO_ 419361024 "engine load";'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [("frame-id-extended", line_of(text, "BO_ 4193"))]
    message = loaded.database.get_message_by_name("Load")
    assert (message.frame_id, message.is_extended_frame) == (0x18FEF100, True)
    assert (message.cycle_time, message.comment) == (100, "engine load")
    data = bytes([0, 125, 0, 0, 0, 0, 0, 0])
    assert loaded.database.decode_message(0x18FEF100, data) == {"Level": pytest.approx(50.0)}


def test_signals_past_the_frame_are_dropped_with_their_entries_and_the_rest_decodes(tmp_path) -> None:
    text = dbc(
        "BO_ 200 Short: 2 ECU\n"
        ' SG_ Low : 0|8@1+ (1,0) [0|255] "" TCU\n'
        ' SG_ Beyond : 12|8@1+ (1,0) [0|255] "" TCU\n'
        ' SG_ Motorola : 15|8@0+ (1,0) [0|255] "" TCU\n'
        ' SG_ MotorolaBeyond : 7|24@0+ (1,0) [0|255] "" TCU\n'
        'VAL_ 200 Beyond 0 "none" ;'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [
        ("signal-out-of-frame", line_of(text, " SG_ Beyond")),
        ("signal-out-of-frame", line_of(text, " SG_ MotorolaBeyond")),
        ("dependent-dropped", line_of(text, "VAL_ 200")),
    ]
    assert "reaches bit 19, past the end of the 2-byte message" in loaded.warnings[0].message
    message = loaded.database.get_message_by_name("Short")
    assert [s.name for s in message.signals] == ["Low", "Motorola"]
    assert message.decode(bytes([0x12, 0x34])) == {"Low": 0x12, "Motorola": 0x34}


def test_a_multiplexed_signal_past_the_frame_is_dropped_and_every_page_still_decodes(tmp_path) -> None:
    text = dbc(
        "BO_ 200 Paged: 3 ECU\n"
        ' SG_ Page M : 0|8@1+ (1,0) [0|1] "" TCU\n'
        ' SG_ Volts m0 : 8|16@1+ (0.01,0) [0|20] "V" TCU\n'
        ' SG_ Fuel m1 : 8|8@1+ (1,0) [0|100] "%" TCU\n'
        ' SG_ Ambient m1 : 20|8@1+ (1,-40) [-40|87] "degC" TCU'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [("signal-out-of-frame", line_of(text, " SG_ Ambient"))]
    message = loaded.database.get_message_by_name("Paged")
    assert message.decode(bytes([0, 0x10, 0x27])) == {"Page": 0, "Volts": pytest.approx(100.0)}
    assert message.decode(bytes([1, 42, 0])) == {"Page": 1, "Fuel": 42}


def test_a_repeated_message_name_keeps_the_first_and_drops_the_entries_of_the_repeat(tmp_path) -> None:
    text = dbc(
        'BO_ 200 Base: 8 ECU\n SG_ Other : 0|8@1+ (1,0) [0|255] "" TCU\n'
        'VAL_ 200 Other 0 "zero" ;\nCM_ BO_ 200 "the repeat";'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [
        ("message-duplicate-name", line_of(text, "BO_ 200")),
        ("dependent-dropped", line_of(text, "VAL_ 200")),
        ("dependent-dropped", line_of(text, "CM_ BO_ 200")),
    ]
    assert [m.name for m in loaded.database.messages] == ["Base"]
    with pytest.raises(KeyError):
        loaded.database.get_message_by_frame_id(200)
    assert_base_decodes(loaded)


def test_duplicates_across_files_are_judged_against_the_first_file(tmp_path) -> None:
    first = write(tmp_path, dbc(), "first.dbc")
    same = write(tmp_path, dbc('BO_ 300 Extra: 1 ECU\n SG_ X : 0|8@1+ (1,0) [0|255] "" TCU'), "second.dbc")
    loaded = load_dbc_files([first, same])
    assert [(w.path.name, w.code) for w in loaded.warnings] == [("second.dbc", "message-duplicate-id")]
    assert f"{first}:" in loaded.warnings[0].message
    assert [m.name for m in loaded.database.messages] == ["Base", "Extra"]
    assert_base_decodes(loaded)
    other_text = dbc().replace("0|16@1+", "0|12@1+")
    other = write(tmp_path, other_text, "other.dbc")
    with pytest.raises(DbcLoadError, match=rf"other\.dbc:{line_of(other_text, 'BO_ 100')}: .*first\.dbc:"):
        load_dbc_files([first, other])


def test_attribute_quirks_are_dropped_and_valid_attributes_stay(tmp_path) -> None:
    text = dbc(
        'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;\n'
        'BA_DEF_ BO_ "GenMsgSendType" ENUM "Cyclic","OnEvent";\n'
        'BA_DEF_ SGTYPE_ "TypeAttr" INT 0 10;\n'
        'BA_DEF_DEF_ "GenMsgCycleTime" 0;\n'
        'BA_ "GenMsgCycleTime" BO_ 100 20;\n'
        'BA_ "GenMsgSendType" BO_ 100 7;\n'
        'BA_ "TypeAttr" 3;\n'
        'BA_ "Undefined" BO_ 100 1;'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [
        ("ba-def-unsupported", line_of(text, "BA_DEF_ SGTYPE_")),
        ("ba-bad-value", line_of(text, 'BA_ "GenMsgSendType"')),
        ("dependent-dropped", line_of(text, 'BA_ "TypeAttr"')),
        ("ba-undefined-attribute", line_of(text, 'BA_ "Undefined"')),
    ]
    assert "not the index of one of its 2 choices" in loaded.warnings[1].message
    assert loaded.database.get_message_by_name("Base").cycle_time == 20


def test_overlaps_in_one_layout_level_drop_the_later_signal_page_overlaps_are_kept(tmp_path) -> None:
    text = dbc(
        "BO_ 200 Paged: 8 ECU\n"
        ' SG_ Page M : 0|8@1+ (1,0) [0|1] "" TCU\n'
        ' SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" TCU\n'
        ' SG_ B m1 : 8|8@1+ (1,0) [0|255] "" TCU\n'
        ' SG_ C m1 : 12|8@1+ (1,0) [0|255] "" TCU\n'
        ' SG_ D : 56|8@1+ (1,0) [0|255] "" TCU\n'
        ' SG_ E m0 : 52|8@1+ (1,0) [0|255] "" TCU'
    )
    loaded = load_dbc_files([write(tmp_path, text)])
    assert found(loaded) == [
        ("signal-overlap", line_of(text, " SG_ C")),
        ("signal-overlap-mux", line_of(text, " SG_ E")),
    ]
    assert "C of Paged shares bits with B" in loaded.warnings[0].message
    message = loaded.database.get_message_by_name("Paged")
    assert message.decode(bytes([1, 0xAB, 0x0C, 0, 0, 0, 0, 9])) == {"Page": 1, "B": 0xAB, "D": 9}
    assert message.decode(bytes([0, 0x34, 0x12, 0, 0, 0, 0xA0, 0x0B])) == {
        "Page": 0,
        "A": 0x1234,
        "E": 0xBA,
        "D": 0x0B,
    }


REFUSALS = {
    "different layouts": (
        'BO_ 100 Other: 8 ECU\n SG_ X : 0|8@1+ (1,0) [0|255] "" TCU',
        "BO_ 100 Other",
        r"frame ID 0x64 of Other is already defined by Base \(line \d+\) with another layout",
    ),
    "multiplexer past the frame": (
        f"BO_ 200 Paged: 2 ECU\n SG_ Page M : 16|8@1+ (1,0) [0|1] {SIGNAL}\n"
        f" SG_ A m0 : 0|8@1+ (1,0) [0|255] {SIGNAL}",
        " SG_ Page",
        "multiplexer Page of Paged reaches bit 23, .* the signals it selects cannot be decoded",
    ),
    "multiplexers sharing bits": (
        f"BO_ 200 Paged: 8 ECU\n SG_ P1 M : 0|8@1+ (1,0) [0|1] {SIGNAL}\n"
        f" SG_ P2 m1M : 8|8@1+ (1,0) [0|1] {SIGNAL}\n SG_ P3 m1M : 12|8@1+ (1,0) [0|1] {SIGNAL}\n"
        f" SG_ Y m0 : 24|8@1+ (1,0) [0|1] {SIGNAL}\n SG_ Z m0 : 32|8@1+ (1,0) [0|1] {SIGNAL}\n"
        "SG_MUL_VAL_ 200 P2 P1 1-1;\nSG_MUL_VAL_ 200 P3 P1 1-1;\n"
        "SG_MUL_VAL_ 200 Y P2 0-0;\nSG_MUL_VAL_ 200 Z P3 0-0;",
        " SG_ P3",
        "multiplexer P3 of Paged shares bits with multiplexer P2; the pages it selects cannot be decoded",
    ),
    "29 bits": (
        "BO_ 1073741824 Wide: 8 ECU",
        "BO_ 1073741824",
        "frame ID 0x40000000 of Wide does not fit in 29 bits",
    ),
    "malformed signal": (
        'BO_ 200 M: 8 ECU\n SG_ Broken : 0|8@1+ (1,0) "" TCU',
        " SG_ Broken",
        "malformed SG_",
    ),
    "stray character": ("BO_ 200 Hash#: 8 ECU", "BO_ 200", "unexpected character '#'"),
    "unterminated string": ('CM_ BO_ 100 "open;', 'CM_ BO_ 100 "', "unterminated string"),
    "missing semicolon": ('VAL_ 100 Gear 0 "P"', "VAL_ 100", "VAL_ statement has no closing ';'"),
    "signal outside a message": (
        f'CM_ "bus";\n SG_ Lost : 0|8@1+ (1,0) [0|255] {SIGNAL}',
        " SG_ Lost",
        "SG_ outside a BO_ message",
    ),
    "cantools syntax error": ("BS_: 500", "BS_: 500", "cannot parse DBC"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_would_decode_wrong_is_refused_with_file_and_line(tmp_path, case) -> None:
    extra, fragment, reason = REFUSALS[case]
    text = dbc(extra)
    with pytest.raises(DbcLoadError, match=rf"quirk\.dbc:{line_of(text, fragment)}: {reason}"):
        load_dbc_files([write(tmp_path, text)])


def test_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(DbcLoadError, match=r"absent\.dbc: DBC file not found"):
        load_dbc_files([tmp_path / "absent.dbc"])


def test_each_workaround_is_logged_with_file_and_line(tmp_path, caplog) -> None:
    text = dbc('VAL_ 100 Missing 1 "on" ;')
    path = write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="edge.dbcload"):
        loaded = load_dbc_files([path])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, str(loaded.warnings[0]))
    ]
    assert str(loaded.warnings[0]).startswith(
        f"{path}:{line_of(text, 'VAL_ 100')}: VAL_ names signal Missing"
    )


def test_the_project_dbc_loads_without_warnings_even_in_strict_mode() -> None:
    path = REPO / "dbc" / "roadwave_car.dbc"
    loaded = load_dbc_files([path], strict=True)
    assert loaded.warnings == ()
    assert len(loaded.database.messages) == 11
    assert len(load_dbc_files([path]).database.messages) == 11
    for message in loaded.database.messages:
        assert round_trip(message) >= 1


# -- real-world samples ----------------------------------------------------------------------


def layouts(tree: Sequence) -> list[tuple[dict[str, int], list[str]]]:
    """(multiplexer values, other signals) for every choice of pages in a cantools signal tree."""
    result: list[tuple[dict[str, int], list[str]]] = [({}, [])]
    for node in tree:
        if isinstance(node, str):
            result = [(mux, [*plain, node]) for mux, plain in result]
            continue
        ((name, pages),) = node.items()
        result = [
            ({**mux, name: page, **sub_mux}, plain + sub_plain)
            for mux, plain in result
            for page, subtree in pages.items()
            for sub_mux, sub_plain in layouts(subtree)
        ]
    return result


def mid_raw(signal: cantools.database.can.Signal) -> int:
    """A raw value in the middle of the signal's range (negative for signed signals)."""
    if signal.is_signed:
        return -(1 << (signal.length - 1)) // 2
    return max(1, ((1 << signal.length) - 1) // 2)


def round_trip(message: cantools.database.can.Message) -> int:
    """Encode mid-range values with cantools and decode them back, in every layout.

    Returns the number of layouts (choices of multiplexer pages) checked.
    """
    checked = layouts(message.signal_tree)
    for mux, plain in checked:
        physical = {}
        for name in [*mux, *plain]:
            signal = message.get_signal_by_name(name)
            raw = mux[name] if name in mux else mid_raw(signal)
            physical[name] = raw * signal.scale + signal.offset
        decoded = message.decode(message.encode(physical, strict=False), decode_choices=False)
        assert decoded == pytest.approx(physical), message.name
    return len(checked)


def positions(signal: cantools.database.can.Signal) -> list[int]:
    """The signal's bits (byte * 8 + bit, bit 0 = LSB), MSB first, computed without cantools."""
    if signal.byte_order == "little_endian":
        return [signal.start + i for i in reversed(range(signal.length))]
    msb = signal.start // 8 * 8 + 7 - signal.start % 8  # Motorola: count in network order
    return [n // 8 * 8 + 7 - n % 8 for n in range(msb, msb + signal.length)]


def reference_raw(signal: cantools.database.can.Signal, data: bytes) -> int:
    """The raw value of ``signal`` read bit by bit from ``data``."""
    value = 0
    for bit in positions(signal):
        value = value << 1 | (data[bit // 8] >> bit % 8) & 1
    if signal.is_signed and value >> (signal.length - 1):
        value -= 1 << signal.length
    return value


def put_raw(signal: cantools.database.can.Signal, data: bytearray, value: int) -> None:
    """Write a raw value into ``data`` bit by bit."""
    for shift, bit in enumerate(reversed(positions(signal))):
        data[bit // 8] = data[bit // 8] & ~(1 << bit % 8) | (value >> shift & 1) << bit % 8


SAMPLE_RESULTS = {
    "hyundai_2015_ccan.dbc": (113, {"node-duplicate": 1}),
    "tesla_can.dbc": (44, {"val-unknown-signal": 1}),
    "vw_mqb.dbc": (113, {"cm-unknown-signal": 17, "signal-overlap": 2}),
}


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no DBC samples at {SAMPLES}")
@pytest.mark.parametrize("name", sorted(SAMPLE_RESULTS))
def test_real_world_samples_load_with_listed_warnings_and_round_trip(name) -> None:
    messages, codes = SAMPLE_RESULTS[name]
    loaded = load_dbc_files([SAMPLES / name])
    print(f"{name}: {len(loaded.database.messages)} messages", *loaded.warnings, sep="\n  ")
    assert len(loaded.database.messages) == messages
    assert Counter(w.code for w in loaded.warnings) == codes
    layouts_checked = sum(round_trip(message) for message in loaded.database.messages)
    assert layouts_checked >= messages
    with pytest.raises(DbcLoadError, match=rf"{name}:\d+: .*\(refused in strict mode\)"):
        load_dbc_files([SAMPLES / name], strict=True)


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no DBC samples at {SAMPLES}")
def test_vw_brake_signals_sharing_bits_are_dropped_so_the_rest_of_pla_01_decodes() -> None:
    plain = cantools.database.load_file(SAMPLES / "vw_mqb.dbc", strict=False).get_message_by_name("PLA_01")
    with pytest.raises(cantools.database.DecodeError):  # cantools alone decodes no PLA_01 frame
        plain.decode(bytes(8))
    ours = load_dbc_files([SAMPLES / "vw_mqb.dbc"]).database.get_message_by_name("PLA_01")
    dropped = {s.name for s in plain.signals} - {s.name for s in ours.signals}
    assert dropped == {"PLA_Bremsverzoegerung", "PLA_Anf_Bremsverzoegerung"}
    assert len(ours.decode(bytes(8))) == len(plain.signals) - 2


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"no DBC samples at {SAMPLES}")
@pytest.mark.parametrize("name", sorted(SAMPLE_RESULTS))
def test_real_world_samples_decode_like_a_bit_by_bit_reference(name) -> None:
    db = load_dbc_files([SAMPLES / name]).database
    rng = random.Random(name)
    for message in db.messages:
        pages = layouts(message.signal_tree)
        for _ in range(20):
            data = bytearray(rng.randbytes(message.length))
            mux, plain = rng.choice(pages)
            for multiplexer, page in mux.items():
                put_raw(message.get_signal_by_name(multiplexer), data, page)
            values = message.decode(bytes(data), decode_choices=False, scaling=False)
            assert set(values) == {*mux, *plain}
            assert values == {n: reference_raw(message.get_signal_by_name(n), data) for n in values}, (
                message.name
            )
