"""Reading TOML configuration files into validated values with precise errors.

Edge and cloud configs both go through :class:`Table`, so every setting error
names the file, the key path and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
#: Longest configuration file read, in characters: real ones have a few thousand.
MAX_CONFIG_CHARS = 1024 * 1024


def with_overrides(settings: T, **changes: Any) -> T:
    """A copy of a dataclass with the changes that are not None (e.g. command-line options)."""
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


class ConfigError(ValueError):
    """A configuration file or setting is invalid; the message says where and why."""


def read_overrides(table: Table, settings: T, integers: tuple[int, int]) -> T:
    """A copy of dataclass ``settings`` with the fields ``table`` sets, checked by type.

    Booleans are flags, integers must lie within ``integers``, other fields are numbers
    >= 0; unknown keys, and values the dataclass refuses (a ValueError from its
    ``__post_init__``), are ConfigErrors naming the table.
    """
    low, high = integers
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(settings):  # type: ignore[arg-type]
        current = getattr(settings, item.name)
        if isinstance(current, bool):
            changes[item.name] = table.flag(item.name, current)
        elif isinstance(current, int):
            changes[item.name] = table.integer(item.name, current, minimum=low, maximum=high)
        else:
            changes[item.name] = table.number(item.name, current, minimum=0.0)
    table.finish()
    try:
        return dataclasses.replace(settings, **changes)  # type: ignore[type-var]
    except ValueError as exc:
        raise table.error(str(exc)) from None


class Table:
    """A TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, data: dict[str, Any], where: str, base_dir: Path) -> None:
        self._data = data
        self._where = where
        self.base_dir = base_dir
        self._used: set[str] = set()

    @classmethod
    def load(cls, path: Path) -> Table:
        """Parse a TOML file; relative paths inside it resolve against its folder."""
        try:
            with path.open(encoding="utf-8") as file:
                text = file.read(MAX_CONFIG_CHARS + 1)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: configuration file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        if len(text) > MAX_CONFIG_CHARS:
            raise ConfigError(f"{path}: longer than {MAX_CONFIG_CHARS} characters; not a configuration file")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls(data, str(path), path.parent)

    def _key(self, key: str) -> str:
        return f"{self._where}: {key}"

    def _get(self, key: str, kind: type[T] | tuple[type, ...], default: Any) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is ...:
                raise ConfigError(f"{self._key(key)} is required")
            return default
        value = self._data[key]
        if isinstance(value, bool) and kind not in (bool, (bool,)) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(f"{self._key(key)} must be {names}, got {value!r}")
        return value

    def text(self, key: str, default: Any = ...) -> Any:
        """A string setting (``default`` of ``...`` makes it required)."""
        return self._get(key, str, default)

    def integer(
        self, key: str, default: Any = ..., minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        """An integer setting, optionally bounded."""
        value = self._get(key, int, default)
        if value is not None and minimum is not None and value < minimum:
            raise ConfigError(f"{self._key(key)} must be >= {minimum}, got {value}")
        if value is not None and maximum is not None and value > maximum:
            raise ConfigError(f"{self._key(key)} must be <= {maximum}, got {value}")
        return value

    def number(
        self, key: str, default: Any = ..., minimum: float | None = None, maximum: float | None = None
    ) -> Any:
        """A finite number setting (integers accepted), optionally bounded."""
        value = self._get(key, (int, float), default)
        if value is None:
            return None
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):  # TOML also has nan and inf
            raise ConfigError(f"{self._key(key)} must be a finite number, got {value}")
        if minimum is not None and number < minimum:
            raise ConfigError(f"{self._key(key)} must be >= {minimum}, got {value}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{self._key(key)} must be <= {maximum}, got {value}")
        return number

    def flag(self, key: str, default: Any = ...) -> Any:
        """A boolean setting."""
        return self._get(key, bool, default)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        """A string setting that must be one of ``choices``."""
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(f"{self._key(key)} must be one of {', '.join(choices)}; got {value!r}")
        return value

    def path(self, key: str, default: Any = ...) -> Any:
        """A file path setting, resolved against the configuration file's folder."""
        value = self.text(key, default)
        return None if value is None else (self.base_dir / value).resolve()

    def paths(self, key: str) -> list[Path]:
        """A required list of file paths (a single string is accepted)."""
        value = self._get(key, (str, list), ...)
        items = [value] if isinstance(value, str) else value
        if not items or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{self._key(key)} must be a path or a non-empty list of paths")
        return [(self.base_dir / item).resolve() for item in items]

    def array(self, key: str, default: Any = ...) -> Any:
        """A list setting; the caller checks its items (and names them with :meth:`error`)."""
        return self._get(key, list, default)

    def mapping(self, key: str) -> dict[str, Any]:
        """A free-form inline table (for options handed to another library)."""
        return dict(self._get(key, dict, {}))

    def table(self, key: str, required: bool = False) -> Table:
        """A sub-table; an absent optional one reads as empty."""
        data = self._get(key, dict, ... if required else {})
        return Table(data, f"{self._where} [{key}]", self.base_dir)

    def optional_table(self, key: str) -> Table | None:
        """A sub-table whose presence switches something on: None when absent."""
        return None if self._get(key, dict, None) is None else self.table(key)

    def tables(self, key: str) -> Iterator[Table]:
        """An array of tables (``[[key]]``), each checked on its own."""
        items = self._get(key, list, [])
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(f"{self._key(key)}[{index}] must be a table")
            yield Table(item, f"{self._where} [[{key}]] #{index + 1}", self.base_dir)

    def error(self, problem: str) -> ConfigError:
        """An error about this table, prefixed with where it is."""
        return ConfigError(f"{self._where}: {problem}")

    def finish(self) -> None:
        """Reject keys nobody asked for: usually a typo the user wants to hear about."""
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise ConfigError(f"{self._where}: unknown key(s) {', '.join(unknown)} (known: {known})")
