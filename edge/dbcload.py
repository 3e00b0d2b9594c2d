"""Tolerant DBC loading: accept the quirks of real-world DBC files, warn, refuse what decodes wrong.

Each file is read, tokenized and pre-scanned; quirks are worked around by rewriting tokens
or dropping whole statements, never adding or removing a line break, so line N of the text
that cantools loads is line N of the file. After cantools has loaded it, the model is checked
once more (overlapping signals). Every workaround is a :class:`DbcWarning`, logged and
returned; ``strict=True`` refuses the first one instead.

Warning codes (``<kw>`` is the statement keyword in lower case, ``_`` as ``-``: ``val``,
``cm``, ``ba``, ``ba-rel``, ``sig-valtype``, ``sg-mul-val``, ``bo-tx-bu``, ``sig-group``, ...):

=============================  ===============================================================
``encoding-fallback``          not UTF-8: read as cp1252 (latin-1 when cp1252 fails too)
``name-renamed``               a name cantools cannot parse (leading digit, non-ASCII): renamed
``statement-unsupported``      a section cantools does not parse (SGTYPE_, CAT_, FILTER, ...)
``node-duplicate``             a node listed twice in BU_: the repeat is dropped
``frame-id-extended``          an ID above 0x7FF without the extended flag: read as 29-bit
``unassigned-signals``         VECTOR__INDEPENDENT_SIG_MSG (signals of no frame): dropped
``message-duplicate-id``       a frame ID defined again with the same layout: repeat dropped
``message-duplicate-name``     a message name used again for another frame ID: repeat dropped
``message-too-long``           a message longer than the 64 bytes of a CAN FD frame: dropped
``signal-duplicate-name``      a signal name used twice in one message: repeat dropped
``signal-empty``               a signal of length 0: dropped
``signal-out-of-frame``        a signal reaching past the message length: dropped
``signal-overlap``             two signals sharing bits in one layout level: the later dropped
``signal-overlap-mux``         a page signal sharing bits with one outside its page: both kept
``<kw>-unsupported``           BA_DEF_/BA_DEF_REL_ of a value or object type cantools lacks
``<kw>-undefined-attribute``   BA_, BA_REL_, BA_DEF_DEF_... naming an undefined attribute
``<kw>-bad-value``             an attribute value its definition does not allow
``<kw>-unknown-message``       VAL_, CM_, BA_, ... naming a frame ID the file does not define
``<kw>-unknown-signal``        ... naming a signal its message does not have
``dependent-dropped``          an entry of a message, signal or attribute dropped above
=============================  ===============================================================

Refused with :class:`DbcLoadError` (file and line), because decoding would be wrong: a frame
ID defined twice with different layouts (which one applies is unknowable); a multiplexer that
does not fit its message, or shares bits with another multiplexer, while other signals depend
on it (no page can be selected); a frame ID wider than 29 bits; text that does not parse.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cantools.database
import textparser  # cantools' parser library; its errors carry the offset of bad syntax
from cantools.database.can.message import SignalTreeType

LOGGER = logging.getLogger(__name__)

#: Largest DBC file read: real ones reach a few megabytes.
MAX_DBC_BYTES = 32 * 1024 * 1024
_EXTENDED_FLAG = 0x80000000
_MAX_STANDARD_ID = 0x7FF
_MAX_EXTENDED_ID = 0x1FFFFFFF
_MAX_FRAME_BYTES = 64
_INDEPENDENT_SIGNALS = "VECTOR__INDEPENDENT_SIG_MSG"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+|//[^\n]*)"
    r'|(?P<string>"(?:\\"|[^"])*?")'
    r"|(?P<number>[-+]?[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?(?!\w))"
    r"|(?P<name>\w+)"
    r"|(?P<punct>[()\[\],|@;:+-])"
)
# Statements without a closing ';': VERSION "..."; NS_ : names; BS_:; BU_: nodes; BO_ and SG_.
_OPEN_KEYWORDS = frozenset({"VERSION", "NS_", "BS_", "BU_", "BO_", "SG_"})
_SUPPORTED_KEYWORDS = frozenset({
    "CM_", "BA_DEF_", "BA_DEF_DEF_", "BA_", "BA_DEF_REL_", "BA_DEF_DEF_REL_", "BA_REL_", "VAL_",
    "VAL_TABLE_", "SIG_VALTYPE_", "SG_MUL_VAL_", "SIG_GROUP_", "BO_TX_BU_", "EV_", "ENVVAR_DATA_",
})  # fmt: skip
_UNSUPPORTED_KEYWORDS = frozenset({
    "SGTYPE_", "SGTYPE_VAL_", "BA_DEF_SGTYPE_", "BA_SGTYPE_", "SIG_TYPE_REF_", "SIGTYPE_VALTYPE_",
    "CAT_DEF_", "CAT_", "FILTER", "EV_DATA_", "NS_DESC_", "BU_SG_REL_", "BU_EV_REL_", "BU_BO_REL_",
})  # fmt: skip
_KEYWORDS = _OPEN_KEYWORDS | _SUPPORTED_KEYWORDS | _UNSUPPORTED_KEYWORDS
_ATTRIBUTE_TYPES = frozenset({"INT", "HEX", "FLOAT", "STRING", "ENUM"})
# (definition, default, value) keywords of node/message/signal and of relation attributes
_ATTRIBUTE_KEYWORDS = (("BA_DEF_", "BA_DEF_DEF_", "BA_"), ("BA_DEF_REL_", "BA_DEF_DEF_REL_", "BA_REL_"))
_ATTRIBUTE_OBJECTS = {
    "BA_DEF_": frozenset({"BU_", "BO_", "SG_", "EV_"}),
    "BA_DEF_REL_": frozenset({"BU_SG_REL_", "BU_BO_REL_", "BU_EV_REL_"}),
}
# What follows ``SG_ name [mux]``: ": start|length@order± (factor,offset) [min|max] "unit"".
_SIGNAL_SHAPE = (":", "#", "|", "#", "@", "#", "±", "(", "#", ",", "#", ")", "[", "#", "|", "#", "]", '"')
_MESSAGE_SHAPE = ("w", "#", "w", ":", "#", "w")


class DbcLoadError(ValueError):
    """A DBC file could not be loaded; the message names the file (and line) and the cause."""


@dataclass(frozen=True, slots=True)
class DbcWarning:
    """One worked-around quirk: where it is, a stable code and what was done."""

    path: Path
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message} [{self.code}]"


@dataclass(frozen=True, slots=True)
class LoadedDbc:
    """The database loaded from one or more DBC files and the quirks worked around."""

    database: cantools.database.can.Database
    warnings: tuple[DbcWarning, ...]


@dataclass(slots=True)
class _Token:
    kind: str  # "string" (with its quotes), "number", "name" or "punct"
    text: str  # "" once dropped
    start: int
    end: int
    line: int


@dataclass(slots=True)
class _Statement:
    keyword: str
    tokens: list[_Token]
    dropped: bool = False

    @property
    def line(self) -> int:
        return self.tokens[0].line

    def text(self, index: int) -> str:
        return self.tokens[index].text if index < len(self.tokens) else ""

    def kind(self, index: int) -> str:
        return self.tokens[index].kind if index < len(self.tokens) else ""

    def remove(self) -> None:
        for token in self.tokens:
            token.text = ""
        self.dropped = True


@dataclass(slots=True)
class _Signal:
    name: str
    marker: str  # "", "M", "m<id>" or "m<id>M"
    start: int
    length: int
    little_endian: bool
    signed: bool
    factor: float
    offset: float
    unit: str
    statement: _Statement

    def layout(self) -> tuple[object, ...]:
        """What decoding depends on (not ranges, receivers or comments)."""
        return (self.name, self.marker, self.start, self.length, self.little_endian, self.signed,
                self.factor, self.offset, self.unit)  # fmt: skip


@dataclass(slots=True)
class _Message:
    path: Path
    dbc_id: int  # frame ID with bit 31 set for extended frames, as DBC files write it
    name: str
    length: int
    header: _Statement
    signals: list[_Signal] = field(default_factory=list)
    kept: dict[str, _Signal] = field(default_factory=dict)

    @property
    def frame_id(self) -> str:
        return f"0x{self.dbc_id & ~_EXTENDED_FLAG:X}"

    def layout(self) -> tuple[object, ...]:
        return self.length, sorted(signal.layout() for signal in self.signals)

    def line_of(self, signal_name: str) -> int:
        """The line of a kept signal (of the message if a SystemSignalLongSymbol renamed it)."""
        signal = self.kept.get(signal_name)
        return self.header.line if signal is None else signal.statement.line


@dataclass(frozen=True, slots=True)
class _AttributeDefinition:
    type_name: str
    choices: tuple[str, ...]


@dataclass(slots=True)
class _Registry:
    """Messages kept so far, over all files: duplicates are judged against them."""

    by_id: dict[int, _Message] = field(default_factory=dict)
    by_name: dict[str, _Message] = field(default_factory=dict)


def _shape(token: _Token) -> str:
    if token.kind == "punct":
        return "±" if token.text in "+-" else token.text
    return {"number": "#", "string": '"', "name": "w"}[token.kind]


def _unquote(token: _Token) -> str:
    return token.text[1:-1].replace('\\"', '"') if token.kind == "string" else token.text


def _slug(keyword: str) -> str:
    return keyword.strip("_").lower().replace("_", "-")


def _bits(start: int, length: int, little_endian: bool) -> list[int]:
    """The bits of a signal as ``byte * 8 + bit`` (bit 0 = LSB), from DBC start bit and order."""
    if little_endian:
        return list(range(start, start + length))
    bits, bit = [], start  # Motorola: start is the MSB; walk down a byte, then on to the next
    for _ in range(length):
        bits.append(bit)
        bit = bit + 15 if bit % 8 == 0 else bit - 1
    return bits


def _identifier(name: str, taken: set[str]) -> str:
    """A name cantools can parse: accents stripped, other characters ``_``, no leading digit."""
    letters = (c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    candidate = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in letters)
    if not _IDENTIFIER.fullmatch(candidate):  # a leading digit
        candidate = "_" + candidate
    while candidate in taken:
        candidate = "_" + candidate
    return candidate


def _read_text(path: Path) -> tuple[str, tuple[int, str] | None]:
    """The file's text, and (line, message) when it is not UTF-8."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_DBC_BYTES + 1)
    except FileNotFoundError as exc:
        raise DbcLoadError(f"{path}: DBC file not found") from exc
    except OSError as exc:
        raise DbcLoadError(f"{path}: cannot read DBC file: {exc.strerror}") from exc
    if len(data) > MAX_DBC_BYTES:
        raise DbcLoadError(f"{path}: larger than {MAX_DBC_BYTES} bytes; not a DBC file this loader reads")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        try:
            text, encoding = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "latin-1"
        return text, (line, f"not valid UTF-8 (byte 0x{data[exc.start]:02X}); read as {encoding}")


class _DbcText:
    """One DBC file: its tokens and statements, the quirk workarounds and their warnings."""

    def __init__(self, path: Path, strict: bool, registry: _Registry) -> None:
        self.path = path
        self.strict = strict
        self.registry = registry
        self.warnings: list[DbcWarning] = []
        self.source, encoding_problem = _read_text(path)
        if encoding_problem is not None:
            line, message = encoding_problem
            self._warn(line, "encoding-fallback", message)
        self.tokens = self._tokenize()
        self.statements = self._split()
        self.messages: dict[int, _Message] = {}  # kept, by DBC frame ID
        self.dropped: dict[tuple[int, str | None], int] = {}  # (frame ID, signal or None): line
        self.id_alias: dict[int, int] = {}  # extended IDs written without the flag

    # -- reporting ---------------------------------------------------------------------------

    def _warn(self, line: int, code: str, message: str) -> None:
        warning = DbcWarning(self.path, line, code, message)
        if self.strict:
            raise DbcLoadError(f"{warning} (refused in strict mode)")
        LOGGER.warning("%s", warning)
        self.warnings.append(warning)

    def _refuse(self, line: int, message: str) -> DbcLoadError:
        return DbcLoadError(f"{self.path}:{line}: {message}")

    def _drop(self, statement: _Statement, code: str, message: str) -> None:
        statement.remove()
        self._warn(statement.line, code, message)

    def _live(self, *keywords: str) -> Iterator[_Statement]:
        return (s for s in self.statements if s.keyword in keywords and not s.dropped)

    # -- lexing ------------------------------------------------------------------------------

    def _tokenize(self) -> list[_Token]:
        tokens: list[_Token] = []
        source, position, line = self.source, 0, 1
        while position < len(source):
            match = _TOKEN.match(source, position)
            if match is None:
                char = source[position]
                what = "unterminated string" if char == '"' else f"unexpected character {char!r}"
                raise self._refuse(line, what)
            kind = match.lastgroup
            assert kind is not None
            if kind != "space":
                tokens.append(_Token(kind, match.group(), match.start(), match.end(), line))
            line += match.group().count("\n")
            position = match.end()
        return tokens

    def _split(self) -> list[_Statement]:
        """Group the tokens into statements, as cantools' grammar does."""
        tokens, statements, i = self.tokens, [], 0

        def is_keyword(index: int) -> bool:
            return tokens[index].kind == "name" and tokens[index].text in _KEYWORDS

        while i < len(tokens):
            if not is_keyword(i):
                found = tokens[i].text
                raise self._refuse(tokens[i].line, f"unexpected {found!r} where a statement should start")
            keyword, end = tokens[i].text, i + 1
            if keyword == "VERSION":
                if end < len(tokens) and tokens[end].kind == "string":
                    end += 1
            elif keyword == "NS_":  # "NS_ :" and names, up to the next "<name> :"
                end += 1
                while end < len(tokens) and not (end + 1 < len(tokens) and tokens[end + 1].text == ":"):
                    end += 1
            elif keyword in _OPEN_KEYWORDS:
                while end < len(tokens) and not is_keyword(end):
                    end += 1
            else:
                while end < len(tokens) and tokens[end - 1].text != ";":
                    end += 1
                if tokens[end - 1].text != ";":
                    raise self._refuse(tokens[i].line, f"{keyword} statement has no closing ';'")
            statements.append(_Statement(keyword, tokens[i:end]))
            i = end
        return statements

    # -- the quirks --------------------------------------------------------------------------

    def rewrite(self) -> str:
        """Work around every quirk found; return the text for cantools."""
        self._rename_invalid_names()
        for statement in self._live(*_UNSUPPORTED_KEYWORDS):
            what = f"{statement.keyword} is not supported by cantools; dropped"
            self._drop(statement, "statement-unsupported", what)
        self._drop_duplicate_nodes()
        self._check_messages()
        self._check_attributes()
        self._check_references()
        parts, cursor = [], 0
        for token in self.tokens:
            parts.append(self.source[cursor : token.start])
            parts.append(token.text or "\n" * self.source.count("\n", token.start, token.end))
            cursor = token.end
        parts.append(self.source[cursor:])
        return "".join(parts)

    def _rename_invalid_names(self) -> None:
        taken = {token.text for token in self.tokens if token.kind == "name"}
        renamed: dict[str, str] = {}
        for token in self.tokens:
            if token.kind != "name" or _IDENTIFIER.fullmatch(token.text):
                continue
            new = renamed.get(token.text)
            if new is None:
                new = renamed[token.text] = _identifier(token.text, taken)
                taken.add(new)
                what = f"name {token.text!r} cannot be parsed by cantools; renamed to {new!r}"
                self._warn(token.line, "name-renamed", what)
            token.text = new

    def _drop_duplicate_nodes(self) -> None:
        for statement in self._live("BU_"):
            seen: set[str] = set()
            for token in statement.tokens[2:]:
                if token.text not in seen:
                    seen.add(token.text)
                    continue
                what = f"node {token.text} is listed twice in BU_; the repeat is dropped"
                self._warn(token.line, "node-duplicate", what)
                token.text = ""

    def _parse_messages(self) -> list[_Message]:
        messages: list[_Message] = []
        previous = ""
        for statement in self.statements:
            if statement.keyword == "BO_":
                messages.append(self._parse_message(statement))
            elif statement.keyword == "SG_":
                if previous not in ("BO_", "SG_"):
                    raise self._refuse(statement.line, "SG_ outside a BO_ message")
                messages[-1].signals.append(self._parse_signal(statement))
            previous = statement.keyword
        return messages

    def _parse_message(self, statement: _Statement) -> _Message:
        tokens = statement.tokens
        try:
            if tuple(_shape(token) for token in tokens) != _MESSAGE_SHAPE:
                raise ValueError
            return _Message(self.path, int(tokens[1].text), tokens[2].text, int(tokens[4].text), statement)
        except ValueError:
            raise self._refuse(statement.line, "malformed BO_ statement") from None

    def _parse_signal(self, statement: _Statement) -> _Signal:
        tokens = statement.tokens
        colon = 3 if statement.kind(2) == "name" else 2
        try:
            fields = tokens[colon : colon + len(_SIGNAL_SHAPE)]
            if statement.kind(1) != "name" or tuple(_shape(token) for token in fields) != _SIGNAL_SHAPE:
                raise ValueError
            return _Signal(
                name=tokens[1].text,
                marker=tokens[2].text if colon == 3 else "",
                start=int(fields[1].text),
                length=int(fields[3].text),
                little_endian=fields[5].text == "1",
                signed=fields[6].text == "-",
                factor=float(fields[8].text),
                offset=float(fields[10].text),
                unit=_unquote(fields[17]),
                statement=statement,
            )
        except ValueError:
            raise self._refuse(statement.line, "malformed SG_ statement") from None

    def _drop_message(self, message: _Message, code: str, text: str) -> None:
        self.dropped[(message.dbc_id, None)] = message.header.line
        for signal in message.signals:
            signal.statement.remove()
        self._drop(message.header, code, text)

    def _where(self, message: _Message) -> str:
        line = message.header.line
        return f"line {line}" if message.path == self.path else f"{message.path}:{line}"

    def _check_messages(self) -> None:
        for message in self._parse_messages():
            if message.name == _INDEPENDENT_SIGNALS:
                what = f"{message.name} holds {len(message.signals)} signals of no frame; dropped"
                self._drop_message(message, "unassigned-signals", what)
                continue
            self._check_frame_id(message)
            if not 0 <= message.length <= _MAX_FRAME_BYTES:
                what = f"{message.name} is {message.length} bytes long, longer than a CAN FD frame; dropped"
                self._drop_message(message, "message-too-long", what)
                continue
            if self._is_duplicate(message):
                continue
            self._check_signals(message)
            self.messages[message.dbc_id] = message
            self.registry.by_id[message.dbc_id] = message
            self.registry.by_name[message.name] = message

    def _check_frame_id(self, message: _Message) -> None:
        frame_id = message.dbc_id & ~_EXTENDED_FLAG
        if frame_id > _MAX_EXTENDED_ID:
            what = f"frame ID {message.frame_id} of {message.name} does not fit in 29 bits"
            raise self._refuse(message.header.line, what)
        if frame_id > _MAX_STANDARD_ID and not message.dbc_id & _EXTENDED_FLAG:
            extended = message.dbc_id | _EXTENDED_FLAG
            self.id_alias[message.dbc_id] = extended
            message.dbc_id = extended
            message.header.tokens[1].text = str(extended)
            self._warn(
                message.header.line,
                "frame-id-extended",
                f"frame ID {message.frame_id} of {message.name} is above 0x7FF but lacks the extended flag "
                "(bit 31); read as a 29-bit ID",
            )

    def _is_duplicate(self, message: _Message) -> bool:
        first = self.registry.by_id.get(message.dbc_id)
        if first is not None:
            if first.layout() != message.layout():
                raise self._refuse(
                    message.header.line,
                    f"frame ID {message.frame_id} of {message.name} is already defined by {first.name} "
                    f"({self._where(first)}) with another layout; its frames would decode ambiguously",
                )
            self._drop_message(
                message,
                "message-duplicate-id",
                f"{message.name} repeats frame ID {message.frame_id} of {first.name} ({self._where(first)}) "
                "with the same layout; the repeat is dropped",
            )
            return True
        first = self.registry.by_name.get(message.name)
        if first is not None:
            self._drop_message(
                message,
                "message-duplicate-name",
                f"message name {message.name} (frame ID {message.frame_id}) is already used for frame ID "
                f"{first.frame_id} ({self._where(first)}); this definition is dropped",
            )
            return True
        return False

    def _check_signals(self, message: _Message) -> None:
        seen: dict[str, _Signal] = {}
        for signal in message.signals:
            first = seen.setdefault(signal.name, signal)
            if first is not signal:
                self._drop(
                    signal.statement,
                    "signal-duplicate-name",
                    f"signal {signal.name} of {message.name} is already defined at line "
                    f"{first.statement.line}; the repeat is dropped",
                )
                continue
            if signal.length <= 0:
                code, problem = "signal-empty", f"has length {signal.length}"
            elif signal.length > 8 * message.length:  # also keeps absurd lengths from being walked bit by bit
                code = "signal-out-of-frame"
                problem = f"is {signal.length} bits long, more than the {message.length}-byte message holds"
            else:
                bits = _bits(signal.start, signal.length, signal.little_endian)
                if min(bits) >= 0 and max(bits) < 8 * message.length:
                    message.kept[signal.name] = signal
                    continue
                code = "signal-out-of-frame"
                problem = f"reaches bit {max(bits)}, past the end of the {message.length}-byte message"
            selects = any(other.marker.startswith("m") for other in message.signals if other is not signal)
            if signal.marker.endswith("M") and selects:
                raise self._refuse(
                    signal.statement.line,
                    f"multiplexer {signal.name} of {message.name} {problem}; "
                    "the signals it selects cannot be decoded",
                )
            self.dropped[(message.dbc_id, signal.name)] = signal.statement.line
            self._drop(
                signal.statement,
                code,
                f"signal {signal.name} of {message.name} {problem}; dropped, "
                "the other signals decode as defined",
            )

    def _check_attributes(self) -> None:
        for definer, default, user in _ATTRIBUTE_KEYWORDS:
            definitions, dropped = self._attribute_definitions(definer)
            for statement in self._live(default, user):
                name = _unquote(statement.tokens[1])
                definition = definitions.get(name)
                if definition is None and name in dropped:
                    self._drop(
                        statement,
                        "dependent-dropped",
                        f"{statement.keyword} of attribute {name} dropped with its definition "
                        f"(line {dropped[name]})",
                    )
                elif definition is None:
                    self._drop(
                        statement,
                        f"{_slug(statement.keyword)}-undefined-attribute",
                        f"{statement.keyword} sets attribute {name}, which no {definer} defines; dropped",
                    )
                elif problem := _value_problem(definition, statement.tokens[-2], statement.keyword != user):
                    self._drop(
                        statement,
                        f"{_slug(statement.keyword)}-bad-value",
                        f"{statement.keyword} of {definition.type_name} attribute {name}: {problem}; dropped",
                    )

    def _attribute_definitions(self, keyword: str) -> tuple[dict[str, _AttributeDefinition], dict[str, int]]:
        """The attribute definitions of ``keyword`` statements, and the lines of those dropped."""
        definitions: dict[str, _AttributeDefinition] = {}
        dropped: dict[str, int] = {}
        for statement in self._live(keyword):
            first = 2 if statement.kind(1) == "name" else 1
            name, type_name = _unquote(statement.tokens[first]), statement.text(first + 1)
            if first == 2 and statement.text(1) not in _ATTRIBUTE_OBJECTS[keyword]:
                problem = f"is for {statement.text(1)} objects"
            elif type_name not in _ATTRIBUTE_TYPES:
                problem = f"has value type {type_name}"
            else:
                choices = tuple(_unquote(t) for t in statement.tokens[first + 2 : -1] if t.kind == "string")
                definitions[name] = _AttributeDefinition(type_name, choices)
                continue
            dropped[name] = statement.line
            self._drop(
                statement,
                f"{_slug(keyword)}-unsupported",
                f"attribute definition {name} {problem}, which cantools does not support; dropped",
            )
        return definitions, dropped

    def _check_references(self) -> None:
        for statement in self.statements:
            positions = None if statement.dropped else _reference(statement)
            if positions is None:
                continue
            id_token = statement.tokens[positions[0]]
            dbc_id = self.id_alias.get(int(id_token.text), int(id_token.text))
            id_token.text = str(dbc_id)
            signal = None if positions[1] is None else statement.text(positions[1])
            message = self.messages.get(dbc_id)
            if message is not None and (signal is None or signal in message.kept):
                continue
            keyword, target = statement.keyword, f"frame ID 0x{dbc_id & ~_EXTENDED_FLAG:X}"
            if signal is not None:
                target = f"signal {signal} of {target}"
            dropped_at = self.dropped.get((dbc_id, signal), self.dropped.get((dbc_id, None)))
            if dropped_at is not None:
                what = f"{keyword} of {target} dropped with it (line {dropped_at})"
                self._drop(statement, "dependent-dropped", what)
            elif message is None:
                self._drop(
                    statement,
                    f"{_slug(keyword)}-unknown-message",
                    f"{keyword} names {target}, but no message of this file has that ID; dropped",
                )
            else:
                self._drop(
                    statement,
                    f"{_slug(keyword)}-unknown-signal",
                    f"{keyword} names {target}, but {message.name} ({self._where(message)}) has no such "
                    "signal; dropped",
                )

    def drop_overlaps(self, messages: Sequence[cantools.database.can.Message]) -> None:
        """Drop signals sharing bits with another of the same layout level of a loaded message.

        cantools packs the signals of one level (the signals outside any multiplexer page, or
        those of one page) into one sequential bit layout: with shared bits it is longer than
        the frame and no frame of the message decodes. Without the later signal the others do.
        A page signal sharing bits with a signal outside its page decodes separately: kept.
        """
        for message in messages:
            line = self.messages[_dbc_id(message)].line_of
            dropped: dict[str, cantools.database.can.Signal] = {}
            for kept, other, same_level in _overlaps(message, line):
                if not same_level:
                    self._warn(
                        line(other),
                        "signal-overlap-mux",
                        f"multiplexed signal {other} of {message.name} shares bits with {kept} outside its "
                        "page; both are kept, each decoded from the shared bits",
                    )
                    continue
                if other in dropped:  # it shares bits with others too, in other pages
                    continue
                if message.get_signal_by_name(other).is_multiplexer:
                    raise self._refuse(
                        line(other),
                        f"multiplexer {other} of {message.name} shares bits with multiplexer {kept}; "
                        "the pages it selects cannot be decoded",
                    )
                dropped[other] = message.get_signal_by_name(other)
                self._warn(
                    line(other),
                    "signal-overlap",
                    f"signal {other} of {message.name} shares bits with {kept}, which cantools cannot "
                    "decode in one layout; dropped, the other signals decode as defined",
                )
            for signal in dropped.values():
                message.signals.remove(signal)
            if dropped:
                message.refresh()


def _dbc_id(message: cantools.database.can.Message) -> int:
    """The frame ID as DBC files write it: bit 31 set for extended frames."""
    return message.frame_id | (_EXTENDED_FLAG if message.is_extended_frame else 0)


def _value_problem(definition: _AttributeDefinition, token: _Token, is_default: bool) -> str | None:
    """Why an attribute value would break cantools, or None when it is fine."""
    if definition.type_name == "STRING" or (definition.type_name == "ENUM" and is_default):
        return None  # an ENUM default names its choice
    text = _unquote(token)
    try:
        number = float(text)
    except ValueError:
        return f"value {text!r} is not a number"
    if definition.type_name == "ENUM" and not (number.is_integer() and 0 <= number < len(definition.choices)):
        return f"value {text} is not the index of one of its {len(definition.choices)} choices"
    return None


def _reference(statement: _Statement) -> tuple[int, int | None] | None:
    """Token positions of the frame ID and the signal name (if any) that ``statement`` names."""
    positions: tuple[int, int | None]
    match statement.keyword, statement.text(1), statement.text(2):
        case (("VAL_" | "SIG_VALTYPE_" | "SG_MUL_VAL_"), _, _):
            positions = (1, 2)
        case (("BO_TX_BU_" | "SIG_GROUP_"), _, _):
            positions = (1, None)
        case "CM_", "BO_", _:
            positions = (2, None)
        case "CM_", "SG_", _:
            positions = (2, 3)
        case "BA_", _, "BO_":
            positions = (3, None)
        case "BA_", _, "SG_":
            positions = (3, 4)
        case "BA_REL_", _, "BU_BO_REL_":
            positions = (4, None)
        case "BA_REL_", _, "BU_SG_REL_":
            positions = (5, 6)
        case _:
            return None
    id_index, signal_index = positions
    if not statement.text(id_index).isdigit():  # e.g. VAL_ of an environment variable
        return None
    if signal_index is not None and statement.kind(signal_index) != "name":
        return None  # malformed: cantools reports it
    return positions


def _overlaps(
    message: cantools.database.can.Message, line: Callable[[str], int]
) -> list[tuple[str, str, bool]]:
    """Pairs (kept, other, same level) of signals sharing bits.

    Within a level, multiplexers claim their bits first, then the others in file order, and
    ``other`` is the one that came later; across levels ``other`` is the page signal.
    """
    found: dict[tuple[str, str, bool], None] = {}

    def visit(tree: SignalTreeType, outer: dict[int, str]) -> None:
        multiplexers = [next(iter(node)) for node in tree if isinstance(node, dict)]
        names = [*multiplexers, *sorted((node for node in tree if isinstance(node, str)), key=line)]
        level: dict[int, str] = {}
        for name in names:
            signal = message.get_signal_by_name(name)
            bits = _bits(signal.start, signal.length, signal.byte_order == "little_endian")
            clash = next((level[bit] for bit in bits if bit in level), None)
            if clash is not None:
                found[(clash, name, True)] = None
                continue
            outside = next((outer[bit] for bit in bits if bit in outer), None)
            if outside is not None:
                found[(outside, name, False)] = None
            level.update(dict.fromkeys(bits, name))
        for node in tree:
            if isinstance(node, dict):
                for page in next(iter(node.values())).values():
                    visit(page, {**outer, **level})

    visit(message.signal_tree, {})
    return list(found)


def _add_to_database(
    db: cantools.database.can.Database, path: Path, text: str
) -> list[cantools.database.can.Message]:
    """Let cantools load the rewritten text into ``db``; return the messages it added."""
    before = len(db.messages)
    try:
        db.add_dbc_string(text)
    except (textparser.ParseError, textparser.TokenizeError) as exc:
        line = text.count("\n", 0, exc.offset) + 1
        raise DbcLoadError(f"{path}:{line}: cannot parse DBC: {exc}") from exc
    except Exception as exc:  # cantools raises assorted errors on bad input
        raise DbcLoadError(f"{path}: cannot load DBC: {type(exc).__name__}: {exc}") from exc
    return db.messages[before:]


def load_dbc_files(paths: Sequence[Path], *, strict: bool = False) -> LoadedDbc:
    """Load DBC files into one database, working around real-world quirks.

    Warnings come in file order, each file's in line order. With ``strict`` the first quirk
    raises instead.

    Raises:
        DbcLoadError: naming the file (and line) of the first thing refused.
    """
    db = cantools.database.can.Database(strict=False)  # its strict checks are among ours
    registry = _Registry()
    warnings: list[DbcWarning] = []
    for path in paths:
        dbc = _DbcText(path, strict, registry)
        added = _add_to_database(db, path, dbc.rewrite())
        dbc.drop_overlaps(added)
        warnings.extend(sorted(dbc.warnings, key=lambda warning: warning.line))
    return LoadedDbc(db, tuple(warnings))
