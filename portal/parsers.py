"""Request parsers referenced from settings (kept free of view imports, like ``authentication``)."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32


class StrictJSONParser(JSONParser):
    """JSON whose every string can be stored and echoed back, nested at most ``MAX_JSON_DEPTH`` deep.

    PostgreSQL refuses NUL in text and ``\\u0000`` in jsonb, and UTF-8 cannot encode a lone
    surrogate: left in, each becomes a 500 at the database or when an error message echoes it.
    Deep nesting exhausts the recursive decoder. All three are refused here, as a 400.
    """

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(
                f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels."
            ) from None
        _check_storable(data)
        return data


def _check_storable(data: Any) -> None:
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise exceptions.ParseError("JSON parse error - text may not contain NUL (\\u0000) characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise exceptions.ParseError("JSON parse error - text may not contain lone surrogates.") from None
