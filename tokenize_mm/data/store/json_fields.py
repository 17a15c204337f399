"""Store files as checked JSON: every field read is type-checked.

``JsonFile(path, fix)`` reads one JSON file of a store (``store.json``, ``plan.json``,
``part.json``, a chunk index); a file that is not a JSON object, a missing key or a field of the
wrong type is a ``StoreFormatError`` naming the file, the key and where in the file, and ending
with ``fix`` (what to do about it), never a bare ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenize_mm.data.store.errors import StoreFormatError

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
               bool: "boolean", type(None): "null"}  # fmt: skip


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class JsonFile:
    """A JSON file of a store, read with its fields checked.

    Every error is a ``StoreFormatError`` that names the file (and the key, and where in the file)
    and ends with ``fix``, what to do about it.
    """

    path: Path
    fix: str

    def error(self, problem: str) -> StoreFormatError:
        return StoreFormatError(f"{self.path}: {problem}; {self.fix}")

    def load(self) -> dict[str, Any]:
        """The file's JSON object."""
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self.error("missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self.error(f"cannot be read as JSON ({err})") from None
        if not isinstance(value, dict):
            raise self.error(f"holds a JSON {_json_type(value)}, not an object")
        return value

    def field(self, obj: Any, key: str, *kinds: type, where: str = "") -> Any:
        """``obj[key]``, checked to be one of ``kinds`` (``bool`` does not count as ``int``)."""
        at = f"{where}: " if where else ""
        if not isinstance(obj, dict):
            raise self.error(f"{at}is a JSON {_json_type(obj)}, not an object")
        if key not in obj:
            raise self.error(f"{at}missing key {key!r}")
        value = obj[key]
        if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
            names = " or ".join(_JSON_TYPES.get(k, k.__name__) for k in kinds)
            raise self.error(f"{at}{key!r} is a JSON {_json_type(value)}, expected {names}")
        return value

    def count(self, obj: Any, key: str, where: str = "") -> int:
        """``obj[key]``, a non-negative integer."""
        value = self.field(obj, key, int, where=where)
        if value < 0:
            raise self.error(f"{where + ': ' if where else ''}{key!r} is negative ({value})")
        return value

    def ints(self, obj: Any, key: str, where: str = "") -> list[int]:
        """``obj[key]``, a list of non-negative integers."""
        values = self.field(obj, key, list, where=where)
        if not all(type(v) is int and v >= 0 for v in values):
            raise self.error(f"{where + ': ' if where else ''}{key!r} must hold integers >= 0")
        return values
