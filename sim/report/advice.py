"""The report's "Advice" section: what the loop told the person (:mod:`controller.advice`).

Per patient: new advice events by kind (carbs for a low suspension cannot prevent, a high the
safety limits will not let it treat, an unexplained rise: check the site), the median grams
advised, and in follow-advice trials the rescue grams the virtual patient ate; then the latest
events with their messages. Advice never doses; it is drawn on the traces as markers.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from sim.report.html_page import _esc, _num
from sim.report.trial_run import TrialRun
from sim.trial.trace import Trace, advice_events

LATEST_SHOWN = 12


def has_advice(run: TrialRun) -> bool:
    return any("advice_new" in t.diagnostics for t in run.traces.values())


def _rescue_g(trace: Trace) -> float | None:
    column = trace.diagnostics.get("rescue_carbs_g")
    if column is None:
        return None
    return float(np.nansum([float(x) for x in column if x not in ("", None)]))


def advice_section(run: TrialRun) -> str:
    follow = bool(run.summary.get("protocol", {}).get("follow_advice"))
    rows, latest = [], []
    for name in run.patients:
        trace = run.traces.get(name)
        if trace is None:
            continue
        events = advice_events(trace)
        if not events:
            continue
        grams = [g for _, kind, g in events if kind == "carbs"]
        counts = {k: sum(1 for _, kind, _ in events if kind == k) for k in ("carbs", "high", "site_check")}
        eaten = _rescue_g(trace)
        rows.append(f"<tr><td class=\"l\">{_esc(name)}</td><td>{counts['carbs']}</td>"
                    f"<td>{_num(statistics.median(grams), '.0f') if grams else '–'}</td>"
                    + (f"<td>{_num(eaten, '.0f')}</td>" if follow else "")
                    + f"<td>{counts['high']}</td><td>{counts['site_check']}</td></tr>")
        reasons = trace.diagnostics.get("advice_reason") or [""] * len(trace)
        for i, kind, g in events:
            latest.append((trace.time[i], name, kind, g, str(reasons[i])))
    parts = ['<h2 id="advice">Advice</h2>']
    if not rows:
        parts.append("<p>No advice in this run.</p>")
        return "\n".join(parts)
    parts.append("<table><tr><th class=\"l\">patient</th><th>carb advice</th><th>median g</th>"
                 + ("<th>rescue eaten, g</th>" if follow else "")
                 + "<th>high, limits bind</th><th>check site</th></tr>" + "".join(rows) + "</table>")
    latest.sort(key=lambda e: e[0], reverse=True)
    items = "".join(f"<tr><td class=\"l\">{t:%Y-%m-%d %H:%M}</td><td class=\"l\">{_esc(n)}</td>"
                    f"<td class=\"l\">{_esc(k)}{f' {g:.0f} g' if k == 'carbs' else ''}</td>"
                    f"<td class=\"l\">{_esc(r)}</td></tr>" for t, n, k, g, r in latest[:LATEST_SHOWN])
    parts.append(f"<h3>Latest advice</h3><table><tr><th class=\"l\">time</th><th class=\"l\">patient</th>"
                 f"<th class=\"l\">advice</th><th class=\"l\">reason</th></tr>{items}</table>")
    parts.append('<p class="note">New advice only (its first cycle, then every repeat interval while it stands). '
                 "Advice never doses: the loop's insulin is the same with and without it."
                 + (" In this run the virtual patient ate each carb advice when it was given, without telling "
                    "the controller." if follow else "") + "</p>")
    return "\n".join(parts)
