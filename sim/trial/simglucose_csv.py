"""Trial results in simglucose's own results layout: one CSV per patient.

simglucose's ``SimObj.save_results`` writes ``env.show_history()`` with
``DataFrame.to_csv`` to ``<path>/<patient name>.csv``: the index column
``Time``, then ``BG``, ``CGM`` (mg/dL, averages over the sample that ends at
the row), ``CHO`` (g/min) and ``insulin`` (U/min, averages over the sample
that starts at the row, empty in the last row), ``LBGI``, ``HBGI`` and
``Risk`` (simglucose's risk index of that row's BG). Every ``glucotwin trial``
writes the same frame, taken from the same ``env.show_history()`` of the
same environment, to ``<out>/simglucose/<patient>.csv``, so notebooks built
on simglucose's results (``simglucose.analysis.report``) read them unchanged:
:func:`read_simglucose_results` loads a directory as simglucose's analysis
script does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIMGLUCOSE_DIR = "simglucose"
COLUMNS = ("Time", "BG", "CGM", "CHO", "insulin", "LBGI", "HBGI", "Risk")


def simglucose_history(env: Any):
    """simglucose's results frame of a finished run (``T1DSimEnv.show_history()``, index ``Time``)."""
    return env.show_history()


def simglucose_csv_path(out_dir: str | Path, patient: str) -> Path:
    """``<out>/simglucose/<patient>.csv``, the name ``SimObj.save_results`` gives it under ``<out>/simglucose``."""
    return Path(out_dir) / SIMGLUCOSE_DIR / f"{patient}.csv"


def write_simglucose_csv(history: Any, out_dir: str | Path, patient: str) -> Path:
    """Write one patient's frame as ``SimObj.save_results`` does (``df.to_csv(filename)``)."""
    path = simglucose_csv_path(out_dir, patient)
    path.parent.mkdir(parents=True, exist_ok=True)
    history.to_csv(path)
    return path


def read_simglucose_results(directory: str | Path):
    """Every ``*#*.csv`` of ``directory`` as simglucose's analysis reads results
    (``simglucose/analysis/report.py``): ``pd.concat([pd.read_csv(f, index_col=0) ...], keys=names)``,
    the frame that ``simglucose.analysis.report.report(df)`` takes. Patients in name order."""
    import pandas as pd

    files = sorted(Path(directory).glob("*#*.csv"))
    if not files:
        raise FileNotFoundError(f"{directory}: no simglucose result CSVs (<patient>.csv)")
    return pd.concat([pd.read_csv(f, index_col=0) for f in files], keys=[f.stem for f in files])
