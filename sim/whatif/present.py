"""A what-if answer as people read it: a table for the terminal, a figure (PNG) and a page (HTML)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from controller.whatif import WhatIfAnswer
from sim.trial.metrics.units import MG_DL, GlucoseUnits, glucose_units
from twin.whatif import Branch

TABLE_HORIZONS_MIN = (30, 60, 120, 240)


def _row(label: str, b: Branch, u: GlucoseUnits = MG_DL, extra: str = "") -> str:
    f = u.spec
    cells = " ".join(f"{u.value(b.at(h)):5{f}}" if h <= b.horizons_min[-1] else "    -" for h in TABLE_HORIZONS_MIN)
    s = b.summary()
    return (f"{label:22s} {cells}  {u.value(s['min_mg_dl']):6{f}} {u.value(s['max_mg_dl']):7{f}} {s['minutes_below_70']:7.0f} "
            f"{s['minutes_above_180']:8.0f} {b.insulin_u:9.2f}{extra}")


def table(answer: WhatIfAnswer, who: str = "", units: str | GlucoseUnits = "mg") -> str:
    u = glucose_units(units)
    head = " ".join(f"{f'+{h}m':>5s}" for h in TABLE_HORIZONS_MIN)
    lw, lo = answer.loop_with, answer.loop_without
    lines = [
        f"what-if{' for ' + who if who else ''}: {answer.question}  (twin at {answer.issued_at}, "
        f"{answer.horizon_min / 60:g} h, glucose in {u.label})",
        f"{'':22s} {head}  lowest highest {'<' + u.threshold(70) + ' min':>8s} {'>' + u.threshold(180) + ' min':>9s}  insulin U",
        _row("open loop, without", answer.open_without, u),
        _row("open loop, with", answer.open_with, u),
        _row("closed loop, without", lo.branch, u),
        _row("closed loop, with", lw.branch, u),
        "",
        f"open loop: the programmed basal goes on; closed loop: glucotwin's loop answers "
        f"(its MPC, meal bolus and safety supervisor in the twin's future).",
        f"the loop's answer to the action: {answer.loop_extra_insulin_u:+.2f} U over the horizon "
        f"(boluses {lw.loop_bolus_u:.2f} U with, {lo.loop_bolus_u:.2f} U without); first decision: {lw.first_reason}",
        f"band: {answer.coverage:.0%} of outcomes expected inside; computed in {answer.compute_ms:.0f} ms.",
    ]
    return "\n".join(lines)


def figure_png(answer: WhatIfAnswer, title: str = "", units: str | GlucoseUnits = "mg") -> bytes:
    from matplotlib.figure import Figure

    u = glucose_units(units)
    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.subplots()
    for b, color, style, name in ((answer.loop_without.branch, "#555555", "-", "closed loop, without"),
                                  (answer.loop_with.branch, "#1f6fb4", "-", "closed loop, with"),
                                  (answer.open_with, "#1f6fb4", ":", "open loop, with")):
        h = b.horizons_min / 60.0
        ax.plot(h, u.value(b.glucose_mg_dl), style, color=color, lw=2 if style == "-" else 1.3, label=name)
        if style == "-":
            ax.fill_between(h, u.value(b.lower_mg_dl), u.value(b.upper_mg_dl), color=color, alpha=0.15, lw=0)
    ax.axhspan(u.value(70), u.value(180), color="#2ca02c", alpha=0.07)
    ax.axhline(u.value(70), color="#d62728", lw=0.8)
    ax.axhline(u.value(54), color="#d62728", lw=0.8, ls="--")
    ax.set_xlabel("hours from now")
    ax.set_ylabel(f"glucose ({u.label})")
    ax.set_title(title or answer.question, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def page_html(answer: WhatIfAnswer, png: bytes, who: str = "", units: str | GlucoseUnits = "mg") -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>glucotwin what-if</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f6f6f6;padding:1em}"
            "</style></head><body>"
            f"<h1>What if: {html.escape(answer.question)}</h1>"
            f"<p>{html.escape(who)} &mdash; research software, not a medical device: a forecast, never advice to dose.</p>"
            f"<img alt=\"what-if forecast\" src=\"{uri}\"><pre>{html.escape(table(answer, who, units))}</pre></body></html>\n")


def write_outputs(answer: WhatIfAnswer, prefix: Path, who: str = "", units: str | GlucoseUnits = "mg") -> list[Path]:
    """``prefix``.png, .html and .json (the JSON always in mg/dL); returns the paths written."""
    import json

    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = figure_png(answer, f"{who}: {answer.question}" if who else "", units)
    paths = [prefix.with_suffix(".png"), prefix.with_suffix(".html"), prefix.with_suffix(".json")]
    paths[0].write_bytes(png)
    paths[1].write_text(page_html(answer, png, who, units))
    data: dict[str, Any] = {"who": who, **answer.to_dict()}
    paths[2].write_text(json.dumps(data, indent=1) + "\n")
    return paths
