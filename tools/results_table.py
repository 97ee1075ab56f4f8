"""Write a trial's per-patient table (true BG) from its summary.json as a CSV for sim/report/references/ (the reference tables reports show).

    python tools/results_table.py RUN_DIR sim/report/references/NAME.csv

Columns: patient, group, TIR, below 70, below 54, above 180, above 250, mean (mg/dL), %;
the last rows are the groups and the cohort. The protocol and controller go in a comment line.
"""
import csv
import json
import sys
from pathlib import Path

run, out = Path(sys.argv[1]), Path(sys.argv[2])
s = json.loads((run / "summary.json").read_text())
keys = ("in_range_70_180", "below_70", "below_54", "above_180", "above_250", "mean")
p = s["protocol"]
with out.open("w", newline="") as f:
    f.write(f"# controller {s['controller']}, arm {p['arm']}, {p['days']:g} days, sensor {p['sensor']}, "
            f"seed offset {p['seed_offset']}; true BG; glucotwin trial --controller {s['controller']} "
            f"--arm {p['arm']} --days {p['days']:g}\n")
    w = csv.writer(f)
    w.writerow(["patient", "group", "tir", "below_70", "below_54", "above_180", "above_250", "mean_mg_dl"])
    for name, row in s["patients"].items():
        w.writerow([name, row["group"], *(f"{row['bg'][k]:.1f}" for k in keys)])
    for name, row in s["groups"].items():
        w.writerow([name, "group", *(f"{row['bg'][k]:.1f}" for k in keys)])
    w.writerow(["all", "cohort", *(f"{s['cohort']['bg'][k]:.1f}" for k in keys)])
print(f"wrote {out}")
