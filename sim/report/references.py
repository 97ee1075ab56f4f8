"""Reference runs beside a trial: the cached ceilings and earlier designs, per patient.

The tables in ``sim/report/references/`` are per-patient results of runs on the
public protocol (3 days, seed offset 0, Dexcom, no perturbation), written by
``tools/results_table.py``: the ceilings (``ceiling-causal-*``: NOT fair
controllers, upper bounds) and the controller before a redesign
(``mpc-previous-*``). A report of a run on that same protocol and arm shows
them beside the run, with the run's gap to the causal ceiling; a run on any
other protocol says why there is nothing to compare with.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sim.report.html_page import _esc, _num

PUBLIC = {"days": 3.0, "seed_offset": 0, "sensor": "Dexcom", "carb_announcement_factor": 1.0,
          "meal_delay_min": 0.0, "physiology_scale": {}, "follow_advice": False}
"""The protocol the reference tables were measured on (besides the arm)."""

COLUMNS = ("tir", "below_70", "below_54")


@dataclass(frozen=True)
class ReferenceTable:
    name: str  # e.g. ceiling-causal
    arm: str
    provenance: str  # the table's comment line
    patients: dict[str, dict[str, float]]  # also the group rows and "all"


def load_references(arm: str) -> list[ReferenceTable]:
    """Every cached reference table of ``arm``, ceilings first."""
    found = []
    folder = resources.files("sim.report") / "references"
    for entry in sorted(folder.iterdir(), key=lambda e: (not e.name.startswith("ceiling"), e.name)):
        if not entry.name.endswith(f"-{arm}.csv"):
            continue
        lines = entry.read_text().splitlines()
        provenance = lines[0].lstrip("# ").strip() if lines and lines[0].startswith("#") else ""
        rows = csv.DictReader(line for line in lines if not line.startswith("#"))
        found.append(ReferenceTable(entry.name[: -len(f"-{arm}.csv")], arm, provenance,
                                    {r["patient"]: {k: float(r[k]) for k in COLUMNS} for r in rows}))
    return found


def protocol_differences(protocol: dict[str, Any]) -> list[str]:
    """How a run's protocol differs from the one the references were measured on."""
    return [f"{key} {protocol.get(key)!r} (references: {value!r})" for key, value in PUBLIC.items()
            if protocol.get(key, value) != value]


def references_section(summary: dict[str, Any]) -> str:
    """The HTML section: the run beside the cached references of its arm, or why not."""
    protocol = summary.get("protocol", {})
    arm = protocol.get("arm", "hcl")
    parts = ['<h2 id="references">Beside the references</h2>']
    tables = load_references(arm)
    if not tables:
        return "\n".join(parts + [f'<p class="note">No reference table for arm {_esc(arm)}.</p>'])
    differences = protocol_differences(protocol)
    if differences:
        return "\n".join(parts + [
            '<p class="note">The references (' + _esc(", ".join(t.name for t in tables)) + ") were measured on "
            "the public protocol; this run's differs: " + _esc("; ".join(differences))
            + ". Nothing is compared.</p>"])
    ceiling = next((t for t in tables if t.name == "ceiling-causal"), None)
    head = ("<tr><th class=\"l\">patient / group</th><th>this run</th>"
            + "".join(f"<th>{_esc(t.name)}</th>" for t in tables)
            + ("<th>gap to ceiling-causal (TIR points)</th>" if ceiling else "") + "</tr>")

    def cell(m: dict[str, float] | None) -> str:
        if m is None:
            return "<td>-</td>"
        return f"<td>{_num(m['tir'])} / {_num(m['below_70'])} / {_num(m['below_54'])}</td>"

    def ours(row: dict[str, Any]) -> dict[str, float]:
        bg = row["bg"]
        return {"tir": bg["in_range_70_180"], "below_70": bg["below_70"], "below_54": bg["below_54"]}

    rows = []
    entries = [(name, ours(row)) for name, row in summary.get("patients", {}).items()]
    entries += [(name, ours(row)) for name, row in summary.get("groups", {}).items()]
    if "cohort" in summary:
        entries.append(("all", ours(summary["cohort"])))
    for name, mine in entries:
        gap = ""
        if ceiling is not None:
            ref = ceiling.patients.get(name)
            gap = f"<td>{_num(ref['tir'] - mine['tir'])}</td>" if ref else "<td>-</td>"
        cls = ' class="group"' if name in summary.get("groups", {}) or name == "all" else ""
        rows.append(f"<tr{cls}><td class=\"l\">{_esc(name)}</td>{cell(mine)}"
                    + "".join(cell(t.patients.get(name)) for t in tables) + gap + "</tr>")
    notes = "".join(f"<li><strong>{_esc(t.name)}</strong>: {_esc(t.provenance)}</li>" for t in tables)
    parts += [
        '<p class="note">TIR / below 70 / below 54, % of true BG. The ceilings are NOT fair controllers: they '
        "run on the simulator's true model and state (upper bounds for research, never on the control path). "
        f"Tables cached in the package (sim/report/references/):</p><ul>{notes}</ul>",
        f"<table>{head}{''.join(rows)}</table>",
    ]
    return "\n".join(parts)
