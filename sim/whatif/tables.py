"""The what-if validation's tables (``glucotwin whatif-check``), as text."""

from __future__ import annotations

from typing import Any

from sim.whatif.check import HORIZONS_MIN, KINDS


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for scope, s in [(f"arm {a}", summary["by_arm"][a]) for a in summary["arms"]] + [("both arms", summary["all"])]:
        lines.append(f"\n{scope}: {s['moments']} moments; forecast RMSE against true BG (mg/dL) at "
                     + " / ".join(str(h) for h in HORIZONS_MIN) + " min")
        lines.append(f"{'action':9s} {'n':>3s}  {'twin own (w/o)':>22s}  {'closed loop w/o':>22s}  "
                     f"{'open loop with':>22s}  {'closed loop with':>22s}")
        for kind in KINDS + ("all",):
            k = s["by_kind"].get(kind)
            if k is None:
                continue
            cells = []
            for which in ("own_forecast_without", "closed_loop_without", "open_loop_with", "closed_loop_with"):
                cells.append("/".join(f"{k[f'rmse_{h}'][which]:.0f}" for h in HORIZONS_MIN))
            lines.append(f"{kind:9s} {k['n']:3d}  " + "  ".join(f"{c:>22s}" for c in cells))
        lines.append("effect of the action (with - without): median |predicted - true| / |true|, % "
                     "(moments with |true| >= 5 mg/dL), closed loop | open loop; band 80 % coverage (closed loop, with)")
        for kind in KINDS + ("all",):
            k = s["by_kind"].get(kind)
            if k is None:
                continue
            eff = "  ".join(f"{h:>3d} min {k[f'effect_loop_{h}']['median_rel_error_pct']:5.0f} | "
                            f"{k[f'effect_open_{h}']['median_rel_error_pct']:5.0f}" for h in HORIZONS_MIN)
            cov = "/".join(f"{k[f'band80_coverage_{h}']:.2f}" for h in HORIZONS_MIN)
            lines.append(f"{kind:9s} {eff}   coverage {cov}   {k['compute_ms_median']:.0f} ms")
    return "\n".join(lines)
