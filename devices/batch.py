"""Batch uploads (devices, secure elements): a CSV or JSON file, or a JSON list, in; a per-row
report out. Each row is validated and written on its own (the service's transaction), so a bad
row is reported and never half-written, and good rows are kept.

Limits: ``MAX_BATCH_BYTES`` per upload and ``MAX_BATCH_ROWS`` rows (413 beyond either).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions, serializers

from portal.errors import DomainError, InvalidError
from portal.parsers import _check_storable

MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_BATCH_ROWS = 10_000


class BatchTooLarge(DomainError):
    code = "batch_too_large"
    status = 413


class BatchInvalid(InvalidError):
    code = "invalid_batch"


@dataclass(frozen=True)
class BatchFormat:
    """What one kind of batch looks like: the JSON list key, the CSV columns, and how a CSV row
    (all text) becomes the same object a JSON row is."""

    list_key: str
    columns: tuple[str, ...]
    required_columns: tuple[str, ...]
    from_csv: Callable[[dict[str, str]], dict[str, Any]]


def too_large_body(content_length: str | None) -> bool:
    """A request body that cannot hold an acceptable upload (checked before reading it)."""
    try:
        return int(content_length or 0) > MAX_BATCH_BYTES + 64 * 1024
    except ValueError:
        return False


def rows_from_upload(upload: Any, fmt: BatchFormat) -> list[Any]:
    """The rows of an uploaded file: JSON (a list, or an object holding ``fmt.list_key``) or CSV."""
    if upload is None:
        raise BatchInvalid("Attach the file as the multipart field 'file'.", fields={"file": ["Missing."]})
    if upload.size > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"The file is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MiB; split it.")
    raw = upload.read(MAX_BATCH_BYTES + 1)
    if len(raw) > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"The file is larger than {MAX_BATCH_BYTES // (1024 * 1024)} MiB; split it.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BatchInvalid("The file is not UTF-8 text.") from None
    if "\x00" in text:
        raise BatchInvalid("The file contains NUL characters; it is not a text file.")
    name = (getattr(upload, "name", "") or "").lower()
    ctype = (getattr(upload, "content_type", "") or "").lower()
    if name.endswith(".json") or "json" in ctype or text.lstrip().startswith(("[", "{")):
        return rows_from_json_text(text, fmt)
    return rows_from_csv(text, fmt)


def rows_from_json_text(text: str, fmt: BatchFormat) -> list[Any]:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        data = json.loads(text, parse_constant=no_constants)
        _check_storable(data)
    except (ValueError, RecursionError, exceptions.ParseError):
        raise BatchInvalid("The file is not valid JSON (or holds text no database stores).") from None
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {fmt.list_key})
        if unknown or fmt.list_key not in data:
            raise BatchInvalid(f"A JSON batch is a list, or an object with only the key '{fmt.list_key}'.")
        data = data[fmt.list_key]
    if not isinstance(data, list):
        raise BatchInvalid(f"A JSON batch is a list, or an object with only the key '{fmt.list_key}'.")
    return check_row_count(data)


def rows_from_csv(text: str, fmt: BatchFormat) -> list[Any]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\x00extra")
    try:
        header = reader.fieldnames or []
        header = [h.strip() for h in header]
        reader.fieldnames = header
        unknown = [h for h in header if h not in fmt.columns]
        missing = [c for c in fmt.required_columns if c not in header]
        if not header or unknown or missing:
            raise BatchInvalid(
                "The CSV header must name columns from: "
                + ", ".join(fmt.columns)
                + (f" (unknown: {', '.join(u[:40] for u in unknown[:5])})" if unknown else "")
                + (f" (missing: {', '.join(missing)})" if missing else "")
                + "."
            )
        rows: list[Any] = []
        for record in reader:
            if len(rows) >= MAX_BATCH_ROWS:
                raise BatchTooLarge(f"At most {MAX_BATCH_ROWS} rows per batch; split the file.")
            if "\x00extra" in record or any(v is None for v in record.values()):
                rows.append(
                    {
                        "\x00malformed": f"line {reader.line_num} has a different number of fields than the header"
                    }
                )
                continue
            rows.append(fmt.from_csv({k: (v or "").strip() for k, v in record.items()}))
    except csv.Error as exc:
        raise BatchInvalid(f"Malformed CSV at line {reader.line_num}: {exc}.") from None
    return check_row_count(rows)


def check_row_count(rows: list[Any]) -> list[Any]:
    if not rows:
        raise BatchInvalid("The batch has no rows.")
    if len(rows) > MAX_BATCH_ROWS:
        raise BatchTooLarge(f"At most {MAX_BATCH_ROWS} rows per batch; split the file.")
    return rows


def csv_int(value: str) -> Any:
    """'112', '0x70' → int; anything else stays text, for the serializer to refuse clearly."""
    try:
        return int(value, 0)
    except ValueError:
        return value


def _flatten(detail: Any, prefix: str = "") -> str:
    if isinstance(detail, Mapping):
        return "; ".join(
            _flatten(v, f"{prefix}{k}." if k != "non_field_errors" else prefix) for k, v in detail.items()
        )
    if isinstance(detail, list):
        return "; ".join(_flatten(v, prefix) for v in detail)
    return f"{prefix.rstrip('.')}: {detail}" if prefix else str(detail)


def run_batch(
    rows: list[Any],
    serializer_class: type[serializers.Serializer],
    handle: Callable[[dict[str, Any]], Any],
) -> list[dict[str, Any]]:
    """Validate and write each row on its own; the report says, per row, created or why not.

    ``handle`` gets the validated data and returns the created object (with ``pk``); domain
    errors become the row's error. Row numbers count data rows from 1.
    """
    report: list[dict[str, Any]] = []
    for index, row in enumerate(rows, start=1):
        serial = row.get("serial") if isinstance(row, Mapping) else None
        entry: dict[str, Any] = {
            "row": index,
            "serial": serial[:64] if isinstance(serial, str) else "",
            "status": "error",
            "error": "",
        }
        if isinstance(row, Mapping) and "\x00malformed" in row:
            entry["error"] = str(row["\x00malformed"])
            report.append(entry)
            continue
        ser = serializer_class(data=row)
        if not ser.is_valid():
            entry["error"] = _flatten(ser.errors)
            report.append(entry)
            continue
        try:
            created = handle(ser.validated_data)
        except DomainError as exc:
            entry["error"] = exc.message
        else:
            entry.update(status="created", id=str(created.pk))
        report.append(entry)
    return report


def report_summary(report: list[dict[str, Any]]) -> dict[str, Any]:
    created = sum(1 for r in report if r["status"] == "created")
    return {"created": created, "failed": len(report) - created, "rows": report}
