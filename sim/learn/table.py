"""The text ``glucotwin learn`` prints: fitted factors, what was identifiable, implied therapy, meal habits."""

from __future__ import annotations

import math

from twin.learning.learned import LearnedTwin


def format_learned(learned: LearnedTwin, source: str, units: str = "mg") -> str:
    """The fit as text; the RMSE and the ISF in ``units`` ("mg" for mg/dL, "mmol" for mmol/L)."""
    from sim.trial.metrics.units import glucose_units

    u = glucose_units(units)
    h, f = learned.history_stats, learned.fit_stats
    records = ", ".join(n for n, ok in (("insulin", h["insulin_recorded"]), ("carbs", h["carbs_recorded"])) if ok)
    lines = [f"learned twin of {learned.twin.profile.name} from {source}: {h['days']:.1f} days, "
             f"{h['readings']} CGM readings, records: {records or 'CGM only'}",
             "",
             f"{'parameter':20s} {'factor':>7s} {'90 % interval':>15s}  status",
             "-" * 72]
    for name, value in learned.theta.items():
        sd = learned.sd[name]
        low, high = math.exp(value - 1.645 * sd), math.exp(value + 1.645 * sd)
        lines.append(f"{name:20s} {math.exp(value):7.2f} {f'{low:.2f}-{high:.2f}':>15s}  {learned.status[name]}")
    t, p = learned.therapy, learned.profile_therapy
    isf = " / ".join(f"{u.value(v):{u.spec}}" for v in t.isf_mg_dl_per_u)
    lines += ["",
              "6-h forecast of the history (anchored at the CGM every 6 h), RMSE: "
              f"profile's twin {u.value(f['rmse_6h_profile_mg_dl']):{u.fine_spec}} {u.label}, "
              f"learned twin {u.value(f['rmse_6h_mg_dl']):{u.fine_spec}} {u.label}",
              "",
              "therapy the fit implies (oref0 autotune's terms)   profile      learned",
              f"  basal, U/h                                       {p.basal_u_per_h:7.3f}      {t.basal_u_per_h:7.3f}",
              f"  ISF, {u.label + ' per U':<10} (00-06 / 06-12 / 12-18 / 18-24) {u.value(p.isf_mg_dl_per_u[0]):7{u.fine_spec}}      {isf}",
              f"  CR, g per U                                      {p.cr_g_per_u:7.2f}      {t.cr_g_per_u:7.2f}"]
    kept = {n: math.exp(v) for n, v in learned.dosing_theta.items() if v != 0.0}
    lines += ["", "the loop doses on the fit only where it lowers insulin (twin.learning.trust): "
              + (", ".join(f"{n} x{v:.2f}" for n, v in kept.items()) if kept else
                 "nothing here lowers it, so it doses on the profile's twin")
              + "; forecasts (replay --twin) use the whole fit"]
    if learned.habits:
        lines += ["", "usual meals: " + "; ".join(
            f"{d['time']} ±{d['spread_min'] / 2:.0f} min, {d['grams']:.0f} g, {d['per_day']:.1f}/day"
            for d in (m.to_dict() for m in learned.habits))]
    return "\n".join(lines)
