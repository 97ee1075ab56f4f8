"""A JSON array read one element at a time, from a text of any size, in bounded memory.

``json.load`` builds the whole document: a 50 MB export becomes about a gigabyte
of dicts. :func:`json_items` reads the text in chunks of :data:`CHUNK_CHARS`
and decodes one element of the top-level array at a time, holding only the
current chunk and element. A top-level object is one item. One JSON object per
line (``mongoexport`` output) is read line by line, with line numbers.

Raises ValueError (naming ``what``, e.g. "Nightscout") for a text that is not
JSON, is nested too deeply, or whose top level is neither an array nor an
object; an element that is not an object is the reader's to reject.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from sensors.files.common import clip_raw
from sensors.files.delimited import numbered_lines

CHUNK_CHARS = 1 << 16
MAX_ELEMENT_CHARS = 1 << 22
"""An element this long without decoding is not waited for: the file is refused as not valid JSON."""
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonItem:
    """One element: its value, its text (clipped, whitespace collapsed) and its line (JSON lines only)."""

    __slots__ = ("value", "text", "line", "error")

    def __init__(self, value: Any, text: str, line: int | None, error: str | None = None) -> None:
        self.value, self.text, self.line, self.error = value, text, line, error


def json_items(open_text: Callable[[], TextIO], what: str) -> Iterator[JsonItem]:
    """The elements of the JSON text ``open_text()`` returns (opened again for JSON lines).

    An item with ``error`` set is a JSON-lines line that is not valid JSON.
    """
    with open_text() as handle:
        reader = _Chunks(handle)
        reader.skip_space()
        if reader.at_end():
            raise ValueError(f"{what} JSON is empty")
        first = reader.peek()
        if first == "[":
            reader.pos += 1
            yield from _array(reader, what)
            return
        if first != "{":
            value = reader.decode(what)
            reader.skip_space()
            if not reader.at_end():
                raise ValueError(f"{what} file is not valid JSON: extra data after its first value (is it a CSV "
                                 "file? pass the --format of the export it is, or auto)")
            raise ValueError(f"{what} entries must be a JSON array of objects, got a {type(value).__name__}")
        try:
            value, text = reader.decode_with_text(what)
        except ValueError:
            if not reader.has_newline():
                raise
            single = None
        else:
            reader.skip_space()
            single = (value, text) if reader.at_end() else None
    if single is not None:
        yield JsonItem(single[0], single[1], None)
        return
    yield from _json_lines(open_text)


def _array(reader: _Chunks, what: str) -> Iterator[JsonItem]:
    first = True
    while True:
        reader.skip_space()
        if reader.at_end():
            raise ValueError(f"{what} file is not valid JSON: the array is not closed (']' missing at the end)")
        c = reader.peek()
        if c == "]":
            reader.pos += 1
            reader.skip_space()
            if not reader.at_end():
                raise ValueError(f"{what} file is not valid JSON: extra data after the array's ']'")
            return
        if not first:
            if c != ",":
                raise ValueError(f"{what} file is not valid JSON: expected ',' or ']' between elements, got {c!r}")
            reader.pos += 1
            reader.skip_space()
        first = False
        value, text = reader.decode_with_text(what)
        yield JsonItem(value, text, None)


def _json_lines(open_text: Callable[[], TextIO]) -> Iterator[JsonItem]:
    with open_text() as handle:
        for number, line in numbered_lines(handle):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                yield JsonItem(None, clip_raw(line), number, "malformed entry: not valid JSON")
                continue
            yield JsonItem(value, clip_raw(line), number)


class _Chunks:
    """The text read in chunks; ``pos`` is the position in the current buffer."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._fill()
        if self.buf.startswith("\ufeff"):
            self.pos = 1

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def skip_space(self) -> None:
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._fill():
                return

    def at_end(self) -> bool:
        return self.pos >= len(self.buf) and self.eof

    def peek(self) -> str:
        return self.buf[self.pos]

    def has_newline(self) -> bool:
        return "\n" in self.buf

    def decode(self, what: str) -> Any:
        return self.decode_with_text(what)[0]

    def decode_with_text(self, what: str) -> tuple[Any, str]:
        """The value at ``pos`` and its text; reads more until it decodes (or cannot)."""
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except RecursionError:
                raise ValueError(f"{what} JSON is nested too deeply") from None
            except json.JSONDecodeError as err:
                if len(self.buf) - self.pos < MAX_ELEMENT_CHARS and self._fill():
                    continue
                raise ValueError(f"{what} file is not valid JSON: {err.msg} (char {err.pos - self.pos} "
                                 "of an element)") from None
            if end >= len(self.buf) and self._fill():  # a number may go on in the next chunk
                continue
            text = self.buf[self.pos:end]
            self.pos = end
            return value, clip_raw(" ".join(text.split()) if "\n" in text else text)
