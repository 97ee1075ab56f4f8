"""The reference table of the live configuration, ``deploy/CONFIG.md``, written from the table of ranges.

``python -m controller.loop.config.reference > deploy/CONFIG.md`` regenerates it;
a test checks that the file and :data:`controller.loop.config.ranges.SETTINGS` agree.
"""

from __future__ import annotations

from controller.loop.config.ranges import (
    NIGHTSCOUT_MIN_SECRET_CHARS,
    PUMP_MIN_KEY_BYTES,
    REQUIRED,
    SECTIONS,
    Bound,
    Setting,
    format_number,
    settings_of,
    toml_repr,
)


def _doc_bound(b: float | Bound | None) -> str:
    if b is None:
        return ""
    return format_number(b) if isinstance(b, (int, float)) else b.doc


def _doc_default(s: Setting) -> str:
    if s.default is REQUIRED:
        return "required"
    if s.default is None:
        return "(none)"
    if isinstance(s.default, Bound):
        return s.default.doc
    if isinstance(s.default, float):
        return format_number(s.default)
    return toml_repr(s.default)


def _doc_allowed(s: Setting) -> str:
    if s.kind == "basal":
        return f"list of {{start = \"HH:MM\", rate_u_per_h}}; rate {_doc_bound(s.low)} .. {_doc_bound(s.high)} U/h"
    if s.kind == "schedule":
        from controller.loop.config.checks import SCHEDULE_VALUE_KEYS

        key = SCHEDULE_VALUE_KEYS[s.key]
        return f"list of {{start = \"HH:MM\", {key}}} from 00:00; each {_doc_bound(s.low)} .. {_doc_bound(s.high)} {s.unit}"
    if s.choices:
        return " or ".join(toml_repr(c) for c in s.choices)
    if s.kind == "bool":
        return "true or false"
    if s.pattern is not None:
        return s.pattern_doc
    if s.kind in ("float", "int"):
        unit = f" {s.unit}" if s.unit and s.unit != "x" else ""
        return f"{_doc_bound(s.low)} .. {_doc_bound(s.high)}{unit}"
    return "any string"


_TYPE_DOC = {"float": "number", "int": "integer", "bool": "boolean", "str": "string", "choice": "string",
             "basal": "array of tables", "schedule": "array of tables"}


def render_markdown() -> str:
    """``deploy/CONFIG.md``: every key, its type, default, allowed range and why (from :data:`SETTINGS`)."""
    lines = [
        "# glucotwin run: configuration reference",
        "",
        "Generated from `controller/loop/config/ranges.py` (`python -m controller.loop.config.reference > deploy/CONFIG.md`);",
        "a test checks that this file and the code agree. Ranges are inclusive hard limits: a value outside",
        "them, a value of the wrong TOML type (`\"false\"` is a string, `5.0` is not an integer) or an unknown",
        "key stops `glucotwin run` with one line naming the key, the value and the allowed range.",
        "Age groups (AndroidAPS): child < 13, teenage 13..17, adult >= 18 years (`[profile] age_years`).",
        "After loading, a preflight reads every secret and checks files and devices before anything connects",
        f"(pump key hex and >= {PUMP_MIN_KEY_BYTES} bytes, Nightscout secret >= {NIGHTSCOUT_MIN_SECRET_CHARS} "
        "characters, MQTT password and TLS files readable,",
        "journal directory writable, serial devices present). Research software, not a medical device.",
        "",
    ]
    for section in SECTIONS:
        lines += [f"## [{section}]", "", "| key | type | default | allowed | why |", "|---|---|---|---|---|"]
        for s in settings_of(section):
            cells = [f"`{s.key}`", _TYPE_DOC[s.kind], _doc_default(s), _doc_allowed(s), s.reason]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Print ``deploy/CONFIG.md`` to standard output."""
    print(render_markdown(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
