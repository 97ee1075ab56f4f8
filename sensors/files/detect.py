"""Which CGM export a text is, from its first lines: the format and the CSV delimiter.

- JSON (a text starting with ``[`` or ``{``): a Tidepool export if its first
  records have Tidepool data types or upload ids, else Nightscout entries.
- CSV, ``,``, ``;`` or tab delimited: the first non-blank line whose columns
  are a Dexcom Clarity export's, an iglu file's, or (after LibreView's title
  line) a LibreView export's.

A text that is none of these is refused with what its first line holds and
what a readable file looks like.
"""

from __future__ import annotations

import io

from sensors.files.clarity import CLARITY
from sensors.files.common import clip_raw, csv_fields, split_lines
from sensors.files.delimited import DELIMITERS, CsvFormat, best_split, delimiter_name
from sensors.files.iglu import IGLU
from sensors.files.jsonstream import json_items
from sensors.files.libreview import LIBREVIEW
from sensors.files.tidepool import looks_like_tidepool

CSV_FORMATS: dict[str, CsvFormat] = {"clarity": CLARITY, "libreview": LIBREVIEW, "iglu": IGLU}
"""The CSV formats, in the order their headers are tried."""
JSON_FORMATS = ("nightscout", "tidepool")
HEAD_CHARS = 1 << 18
"""How much of a file detection reads."""
_SNIFF_ITEMS = 100

READABLE = (
    "expected a JSON array (Nightscout entries, a Tidepool export) or a CSV header, ',', ';' or tab delimited, "
    "of a Dexcom Clarity export ('Timestamp (YYYY-MM-DDThh:mm:ss)', 'Event Type', 'Glucose Value (mg/dL)' or "
    "'(mmol/L)'), of a LibreView export (after its title line: 'Device Timestamp', 'Record Type', "
    "'Historic Glucose mg/dL' or 'mmol/L') or of an iglu file ('time' and 'gl', with 'id' for several subjects); "
    "to read another CSV, rename its columns to time,gl and pass --units mmol/L if its values are mmol/L"
)


def sniff(head: str) -> tuple[str, str | None]:
    """(format, CSV delimiter or None) of a text from its beginning (``head``, up to :data:`HEAD_CHARS`).

    Raises ValueError if the text is empty or none of the formats.
    """
    body = head.lstrip("\ufeff \t\r\n")
    if not body:
        raise ValueError("empty file: no CGM data")
    if body[0] in "[{":
        return ("tidepool" if looks_like_tidepool(_first_items(body)) else "nightscout"), None
    lines = [line for line in split_lines(body) if line.strip()]
    if lines and len(body) >= HEAD_CHARS and not head.endswith("\n"):
        lines = lines[:-1] or lines  # the last line may be cut
    for i, line in enumerate(lines[: 1 + max(f.preamble_lines for f in CSV_FORMATS.values())]):
        for name, fmt in CSV_FORMATS.items():
            if i > fmt.preamble_lines:
                continue
            for d in DELIMITERS:
                names = [n.strip().lower() for n in csv_fields(line, d) or []]
                if fmt.is_header(names):
                    return name, d
    first = lines[0] if lines else body[:200]
    d, fields = best_split(first, None)
    raise ValueError(f"cannot tell the CGM file format from its first line {clip_raw(first)!r} ({len(fields)} "
                     f"field(s) split on {delimiter_name(d)}): {READABLE}")


def _first_items(body: str) -> list[object]:
    items: list[object] = []
    try:
        for item in json_items(lambda: io.StringIO(body, newline="\n"), "JSON"):
            items.append(item.value)
            if len(items) >= _SNIFF_ITEMS:
                break
    except ValueError:  # the head may end inside an element
        pass
    return items
