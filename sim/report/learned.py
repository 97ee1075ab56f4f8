"""The report's "Learned twins" section: what ``glucotwin learn`` fitted for each patient of a run.

Read from ``learning.json`` beside the trial (written by ``glucotwin trial
--learn-days`` and ``--twin``): per patient the fitted factors with what was
identifiable, the 6-h forecast residuals of the history (profile's twin vs
learned), the basal / ISF / CR the fit implies beside the profile's, and,
for the onboarding arm, parameter recovery against the simulator's true
patient (validation only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.report.html_page import _esc, _num
from sim.trial.metrics.units import MG_DL, GlucoseUnits

LEARNING_FILENAME = "learning.json"
_SHOWN = ("sensitivity", "basal_glucose", "carb_effect", "absorption_speed", "insulin_speed")


def load_learning(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / LEARNING_FILENAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _factor(entry: dict[str, Any]) -> str:
    mark = {"learned": "", "partly learned": "~"}.get(entry["status"], "(prior)")
    return f"{_num(entry['factor'], '.2f')}{mark}"


def _in(u: GlucoseUnits, value: Any) -> Any:
    """A glucose value (mg/dL) in ``u``; anything else (None, missing) as it is, for ``_num`` to show as –."""
    return u.value(value) if isinstance(value, (int, float)) else value


def learned_section(learning: dict[str, Any], u: GlucoseUnits = MG_DL) -> str:
    head = (f"<tr><th class=\"l\">patient</th><th>6-h RMSE, profile → learned ({_esc(u.label)})</th>"
            + "".join(f"<th>{_esc(n.replace('_', ' '))}</th>" for n in _SHOWN)
            + f"<th>basal U/h (profile → learned)</th><th>ISF {_esc(u.label)}/U, day mean</th><th>CR g/U</th>"
            + "<th>dosing twin: sensitivity factor</th>"
            + "<th>1-U drop error vs truth, profile → learned → dosing twin (%)</th></tr>")
    rows = []
    for p in learning.get("patients", []):
        fit, th = p["fit"], p["therapy"]
        isf = lambda t: _in(u, sum(t["isf_mg_dl_per_u"]) / len(t["isf_mg_dl_per_u"]))  # noqa: E731
        spec = u.fine_spec
        rec = p.get("recovery", {}).get("error_pct")
        rec_cell = (f"{_num(rec['profile']['drop_mg_dl_per_u'])} → {_num(rec['learned']['drop_mg_dl_per_u'])}"
                    + (f" → {_num(rec['dosing']['drop_mg_dl_per_u'])}" if "dosing" in rec else "")
                    if rec else "–")
        dosing_sens = p.get("dosing_factors", {}).get("sensitivity")
        rows.append(
            f"<tr><td class=\"l\">{_esc(p['patient'])}</td>"
            f"<td>{_num(_in(u, fit['rmse_6h_profile_mg_dl']), spec)} → {_num(_in(u, fit['rmse_6h_mg_dl']), spec)}</td>"
            + "".join(f"<td>{_factor(p['parameters'][n])}</td>" for n in _SHOWN)
            + f"<td>{_num(th['profile']['basal_u_per_h'], '.2f')} → {_num(th['learned']['basal_u_per_h'], '.2f')}</td>"
            f"<td>{_num(isf(th['profile']), spec)} → {_num(isf(th['learned']), spec)}</td>"
            f"<td>{_num(th['profile']['cr_g_per_u'])} → {_num(th['learned']['cr_g_per_u'])}</td>"
            f"<td>{_num(dosing_sens, '.2f') if dosing_sens is not None else '–'}</td>"
            f"<td>{rec_cell}</td></tr>")
    days = learning.get("history_days")
    origin = (f"{_num(days)} days under {_esc(learning.get('history_controller', '?'))}, seeds k + "
              f"{_esc(learning.get('history_seed_offset', '?'))}" if days else "the twins given with --twin")
    return "\n".join([
        '<h2 id="learned">Learned twins</h2>',
        f'<p class="note">Twins fitted by glucotwin learn from {origin}. Factors multiply the twin personalized '
        "from the clinical profile (1.00: unchanged); ~ partly learned, (prior): the history could not tell. "
        "The 6-h RMSE scores the history's own 6-h forecasts anchored at the CGM. Drop error: the 1-U nadir "
        "drop of each twin against the simulator's true patient (validation only). The dosing twin is the one "
        "the loop doses with: the fit taken only where it gives less insulin than the profile's twin.</p>",
        f"<table>{head}{''.join(rows)}</table>"])
