"""The DBC-to-VSS mapping overlay: which DBC signal feeds which VSS leaf, and how.

The overlay is a YAML file beside the DBC (``dbc/roadwave_car.vss.yaml``), in
the spirit of Eclipse Kuksa's ``dbc2vss`` entries::

    Vehicle.Speed:
      datatype: float
      unit: km/h
      dbc2vss:
        signal: VehicleSpeed        # DBC signal name
        message: ESP_Speed          # optional; needed when the name is not unique
        interval_ms: 100            # publish at most every 100 ms of frame time
        # on_change: true           # ...or only when the value changes
        # transform: {math: "x * 3.6"}
        # transform: {mapping: [{from: P, to: 126}, ...]}

Without a transform and with different DBC and VSS units, the conversion is
derived from :mod:`edge.units`. Every VSS path must be in the contract's catalog
with the same datatype and unit.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cantools.database
import yaml

from edge.units import canonical_unit, conversion
from roadwave.contract import FLOAT_TYPES, INTEGER_RANGES, VSS_CATALOG, Value

Transform = Callable[[float], Value]


class MappingError(ValueError):
    """The mapping file is invalid or does not fit the DBC; the message says where."""


class SampleValueError(ValueError):
    """A decoded value cannot be represented in its VSS datatype."""


@dataclass(frozen=True, slots=True)
class SignalMapping:
    """How one DBC signal becomes one VSS sample."""

    vss_path: str
    message: str
    signal: str
    datatype: str
    convert: Transform
    interval_ns: int
    on_change: bool


_MATH_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "sqrt": math.sqrt,
}
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
)  # fmt: skip


def compile_math(expression: str, where: str) -> Callable[[float], float]:
    """Compile a transform expression in ``x`` (arithmetic and a few math functions)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise MappingError(f"{where}: transform {expression!r} is not an expression: {exc.msg}") from exc
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise MappingError(f"{where}: transform {expression!r} uses {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id != "x" and node.id not in _MATH_FUNCTIONS:
            raise MappingError(f"{where}: transform {expression!r} names unknown {node.id!r}")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise MappingError(f"{where}: transform {expression!r} calls a non-function")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise MappingError(f"{where}: transform {expression!r} has a non-number constant")
    code = compile(tree, where, "eval")
    namespace = {"__builtins__": {}, **_MATH_FUNCTIONS}
    return lambda x: eval(code, namespace, {"x": x})  # noqa: S307 - AST checked above


def _coercer(datatype: str, path: str) -> Callable[[Any], Value]:
    """Return a function that casts a number to the VSS datatype, checking its range.

    NaN and infinities (IEEE float signals, overflowing transforms) raise SampleValueError.
    """

    def finite(value: Any) -> Any:
        if not math.isfinite(value):
            raise SampleValueError(f"{path}: {value} is not a finite number")
        return value

    if datatype == "boolean":
        return lambda value: bool(finite(value))
    if datatype in FLOAT_TYPES:
        return lambda value: float(finite(value))
    low, high = INTEGER_RANGES[datatype]

    def to_integer(value: Any) -> int:
        number = round(finite(value))
        if not low <= number <= high:
            raise SampleValueError(f"{path}: {value} is outside {datatype} [{low}, {high}]")
        return number

    return to_integer


def _label_table(entries: Any, signal: cantools.database.can.Signal, where: str) -> Callable[[float], Any]:
    if not isinstance(entries, list) or not entries:
        raise MappingError(f"{where}: transform mapping must be a non-empty list of {{from, to}}")
    raw_by_label = {str(label): raw for raw, label in (signal.choices or {}).items()}
    table: dict[float, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"from", "to"}:
            raise MappingError(f"{where}: each mapping entry needs exactly 'from' and 'to'")
        source = entry["from"]
        if isinstance(source, str):
            if source not in raw_by_label:
                known = ", ".join(sorted(raw_by_label)) or "none"
                raise MappingError(
                    f"{where}: {source!r} is not a value label of {signal.name} (labels: {known})"
                )
            source = raw_by_label[source]
        table[source] = entry["to"]

    def lookup(raw: float) -> Any:
        try:
            return table[raw]
        except KeyError:
            raise SampleValueError(f"{signal.name}: raw value {raw} has no mapping") from None

    return lookup


def _build_transform(
    spec: Any, signal: cantools.database.can.Signal, vss_unit: str | None, where: str
) -> Callable[[float], Any] | None:
    """The user transform, the derived unit conversion, or None for identity."""
    if spec is not None:
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("math", "mapping"):
            raise MappingError(f"{where}: transform must be {{math: EXPR}} or {{mapping: [...]}}")
        kind, body = next(iter(spec.items()))
        if kind == "math":
            if not isinstance(body, str):
                raise MappingError(f"{where}: transform math must be a string expression")
            return compile_math(body, where)
        return _label_table(body, signal, where)
    factor_offset = conversion(signal.unit, vss_unit)
    if factor_offset is None:
        raise MappingError(
            f"{where}: DBC unit {signal.unit!r} of {signal.name} does not convert to VSS unit "
            f"{vss_unit!r}; add a transform"
        )
    factor, offset = factor_offset
    if (factor, offset) == (1.0, 0.0):
        return None
    return lambda x: x * factor + offset


def _chain(transform: Callable[[float], Any], coerce: Callable[[Any], Value], path: str) -> Transform:
    """``coerce(transform(x))``; whatever makes it fail is a SampleValueError."""

    def convert(x: float) -> Value:
        try:
            return coerce(transform(x))
        except SampleValueError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:  # 1 / 0, sqrt(-1), a complex power ...
            raise SampleValueError(f"{path}: cannot convert {x}: {exc}") from None

    return convert


def _find_signal(
    db: cantools.database.can.Database, signal_name: str, message_name: str | None, where: str
) -> tuple[cantools.database.can.Message, cantools.database.can.Signal]:
    if message_name is not None:
        try:
            message = db.get_message_by_name(message_name)
        except KeyError:
            raise MappingError(f"{where}: no message {message_name!r} in the DBC") from None
        candidates = [(message, s) for s in message.signals if s.name == signal_name]
    else:
        candidates = [(m, s) for m in db.messages for s in m.signals if s.name == signal_name]
    if not candidates:
        raise MappingError(f"{where}: no signal {signal_name!r} in the DBC")
    if len(candidates) > 1:
        owners = ", ".join(m.name for m, _ in candidates)
        raise MappingError(f"{where}: signal {signal_name!r} is in {owners}; name the message")
    return candidates[0]


def _parse_entry(path: str, entry: Any, db: cantools.database.can.Database, where: str) -> SignalMapping:
    where = f"{where}: {path}"
    if not isinstance(entry, dict):
        raise MappingError(f"{where}: entry must be a mapping")
    unknown = set(entry) - {"datatype", "unit", "description", "overlay", "dbc2vss"}
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    catalog = VSS_CATALOG.get(path)
    if catalog is None:
        raise MappingError(f"{where}: not in the roadwave VSS catalog (roadwave/contract.py)")
    datatype = entry.get("datatype")
    if datatype != catalog.datatype:
        raise MappingError(f"{where}: datatype {datatype!r}, the catalog says {catalog.datatype!r}")
    unit = entry.get("unit")
    if canonical_unit(unit) != catalog.unit:
        raise MappingError(f"{where}: unit {unit!r}, the catalog says {catalog.unit!r}")
    if entry.get("overlay", False) != catalog.overlay:
        state = "is" if catalog.overlay else "is not"
        raise MappingError(f"{where}: {state} a roadwave overlay leaf; set overlay accordingly")
    spec = entry.get("dbc2vss")
    if not isinstance(spec, dict) or not isinstance(spec.get("signal"), str):
        raise MappingError(f"{where}: needs dbc2vss with a signal name")
    unknown = set(spec) - {"signal", "message", "interval_ms", "on_change", "transform"}
    if unknown:
        raise MappingError(f"{where}: unknown dbc2vss key(s) {', '.join(sorted(unknown))}")
    message, signal = _find_signal(db, spec["signal"], spec.get("message"), where)
    interval_ms = spec.get("interval_ms", 0)
    on_change = spec.get("on_change", False)
    if not isinstance(interval_ms, int) or isinstance(interval_ms, bool) or interval_ms < 0:
        raise MappingError(f"{where}: interval_ms must be a non-negative integer")
    if not isinstance(on_change, bool):
        raise MappingError(f"{where}: on_change must be true or false")
    if on_change and interval_ms:
        raise MappingError(f"{where}: give interval_ms or on_change, not both")
    transform = _build_transform(spec.get("transform"), signal, catalog.unit, where)
    coerce = _coercer(datatype, path)
    convert: Transform = coerce if transform is None else _chain(transform, coerce, path)
    return SignalMapping(
        vss_path=path,
        message=message.name,
        signal=signal.name,
        datatype=datatype,
        convert=convert,
        interval_ns=interval_ms * 1_000_000,
        on_change=on_change,
    )


def load_mapping(path: Path, db: cantools.database.can.Database) -> list[SignalMapping]:
    """Load a VSS overlay file and check every entry against ``db`` and the catalog.

    Raises:
        MappingError: with file, VSS path and the reason, for the first problem found.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not document:
        raise MappingError(f"{path}: expected a mapping of VSS paths to entries")
    return [_parse_entry(str(vss), entry, db, str(path)) for vss, entry in document.items()]


def default_mapping_path(dbc_path: Path) -> Path:
    """The overlay that sits beside a DBC: ``car.dbc`` -> ``car.vss.yaml``."""
    return dbc_path.with_suffix(".vss.yaml")
