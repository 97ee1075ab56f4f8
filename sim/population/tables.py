"""The text tables ``glucotwin population`` prints: distributions over the population, groups, throughput."""

from __future__ import annotations

from typing import Any

_STATS = ("mean", "sd", "min", "p5", "p25", "median", "p75", "p95", "max")


def _columns(u: Any) -> tuple[tuple[str, str, str], ...]:
    """The table's columns with their range limits and the mean in ``u``."""
    t = u.threshold
    return (("TIR", "in_range_70_180", "{:6.1f}"), (f"<{t(70)}", "below_70", "{:6.1f}"),
            (f"<{t(54)}", "below_54", "{:6.1f}"), (f">{t(180)}", "above_180", "{:6.1f}"),
            (f">{t(250)}", "above_250", "{:6.1f}"), ("mean", "mean", "{:6" + u.spec + "}"), ("CV", "CV", "{:6.1f}"))


def format_population_tables(summary: dict[str, Any], units: str = "mg") -> str:
    """The tables ``glucotwin population`` prints: distributions over the population, throughput
    (glucose in ``units``: "mg" for mg/dL, "mmol" for mmol/L)."""
    from sim.trial.metrics.units import glucose_units

    u = glucose_units(units)
    columns = _columns(u)
    conv = lambda key, x: u.value(x) if key == "mean" else x  # noqa: E731 - only the mean is a glucose
    spec = summary["spec"]
    lines = [
        f"plant: {summary['plant']}",
        f"population of {spec['size']} (seed {spec['seed']}), controller {summary['controller']}, arm {spec['arm']}, "
        f"{spec['days']:g} days, sensor {spec['sensor']}; true glucose, % of samples, glucose in {u.label}",
    ]
    head = "metric".ljust(8) + "".join(s.rjust(8) for s in _STATS)
    lines += ["distribution over patients", head, "-" * len(head)]
    dist = summary["population_results"]["bg"]
    for title, key, _ in columns:
        lines.append(title.ljust(8) + "".join(f"{conv(key, dist[key][s]):8.1f}" for s in _STATS))
    lines.append("-" * len(head))
    group_head = "group".ljust(18) + "".join(f"{t:>7}" for t, _, _ in columns) + "   median TIR"
    lines += ["means by base group (true glucose)", group_head]
    plural = {"adolescent": "adolescents", "adult": "adults", "child": "children"}
    for group, block in summary["groups"].items():
        cells = "".join(fmt.format(conv(key, block["mean_bg"][key])).rjust(7) for _, key, fmt in columns)
        lines.append(f"{plural[group]} ({block['n']})".ljust(18) + cells
                     + f"{block['bg']['in_range_70_180']['median']:13.1f}")
    total = summary["population_results"]
    cells = "".join(fmt.format(conv(key, total["mean_bg"][key])).rjust(7) for _, key, fmt in columns)
    lines.append(f"all ({total['n']})".ljust(18) + cells + f"{total['bg']['in_range_70_180']['median']:13.1f}")
    targets = total["meeting_targets_pct"]
    lines.append("patients meeting consensus targets: "
                 + ", ".join(f"{label}: {pct:.1f} %" for label, pct in targets.items()))
    worst = summary["worst_patient"]
    lines.append(f"worst patient: {worst['name']} (base {worst['base']}; TIR {worst['bg']['in_range_70_180']:.1f} %, "
                 f"<70 {worst['bg']['below_70']:.1f} %, <54 {worst['bg']['below_54']:.1f} %)")
    run = summary.get("run")
    if run:
        lines.append(
            f"throughput: {run['patient_days']:g} patient-days in {run['wall_s']:.1f} s on {run['workers']} "
            f"worker(s) ({run['engine']['engine']}): {run['patient_days_per_s']:.2f} patient-days/s, "
            f"{run['patient_days_per_s_per_worker']:.2f} per worker, {run['patient_days_per_cpu_s']:.2f} per CPU-second "
            f"(CPU per patient-cycle: controller {run['controller_ms_per_patient_cycle']:.3g} ms, plant "
            f"{run['plant_us_per_patient_cycle']:.3g} us; load average {run['load_avg_1min']})"
        )
        scaling = run.get("scaling")
        if scaling:
            lines.append(
                f"scaling 1 -> {run['workers']} workers: {scaling['workers_1']['wall_s']:.1f} s -> {run['wall_s']:.1f} s, "
                f"speedup {scaling['speedup']:.2f}x (efficiency {100 * scaling['efficiency']:.0f} %), "
                f"results identical: {scaling['results_identical']}"
            )
    return "\n".join(lines)
