"""Parameters of the UVA/Padova 2008 model, one value per patient of a batch.

The names are the model's own symbols (Dalla Man et al. 2007, Kovatchev et
al. 2009), spelled as in simglucose's ``vpatient_params.csv`` so that every
equation in :mod:`twin.model` can be read side by side with the paper and
with ``simglucose.patient.t1dpatient.T1DPatient.model``. Each field's unit
and meaning is in :data:`PARAMETER_INFO`.

Building parameters from a simulator row is a plain mapping lookup
(:meth:`ModelParams.from_mappings`); this module never imports pandas or
simglucose. The glue that reads simglucose's tables is in ``sim/``.

Parameter values of a real person come from population priors personalized by
the clinical profile (DESIGN.md honesty rules); the simulator's own values are
for validating the model only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


N_STATES = 13  # states of the model, named by twin.model_state.State

# name -> (unit, meaning)
PARAMETER_INFO: dict[str, tuple[str, str]] = {
    "BW": ("kg", "body weight"),
    # gastro-intestinal tract
    "kmax": ("1/min", "maximal gastric emptying rate"),
    "kmin": ("1/min", "minimal gastric emptying rate"),
    "b": ("1", "fraction of the meal at which gastric emptying first falls to (kmax+kmin)/2"),
    "d": ("1", "fraction of the meal at which gastric emptying returns to (kmax+kmin)/2"),
    "kabs": ("1/min", "intestinal absorption rate"),
    "f": ("1", "fraction of intestinal absorption appearing in plasma"),
    # glucose kinetics
    "Vg": ("dL/kg", "glucose distribution volume"),
    "k1": ("1/min", "plasma -> tissue glucose transfer rate"),
    "k2": ("1/min", "tissue -> plasma glucose transfer rate"),
    # endogenous glucose production EGP = kp1 - kp2*Gp - kp3*Id
    "kp1": ("mg/kg/min", "extrapolated EGP at zero glucose and insulin"),
    "kp2": ("1/min", "liver glucose effectiveness"),
    "kp3": ("(mg/kg/min)/(pmol/L)", "insulin action on the liver"),
    "ki": ("1/min", "delay between insulin signal and its action on EGP"),
    # glucose utilization
    "Fsnc": ("mg/kg/min", "insulin-independent glucose utilization"),
    "Vm0": ("mg/kg/min", "basal maximal insulin-dependent utilization"),
    "Vmx": ("(mg/kg/min)/(pmol/L)", "insulin action on peripheral utilization"),
    "Km0": ("mg/kg", "Michaelis-Menten constant of utilization"),
    "p2u": ("1/min", "rate of insulin action on peripheral utilization"),
    "Ib": ("pmol/L", "basal plasma insulin concentration"),
    # renal excretion E = ke1*(Gp - ke2) when Gp > ke2
    "ke1": ("1/min", "glomerular filtration rate"),
    "ke2": ("mg/kg", "renal threshold of glucose"),
    # insulin kinetics
    "Vi": ("L/kg", "insulin distribution volume"),
    "m1": ("1/min", "liver -> plasma insulin transfer rate"),
    "m2": ("1/min", "plasma -> liver insulin transfer rate"),
    "m4": ("1/min", "peripheral insulin degradation rate"),
    "m30": ("1/min", "hepatic insulin extraction rate"),
    # subcutaneous insulin
    "ka1": ("1/min", "absorption rate of non-monomeric subcutaneous insulin"),
    "ka2": ("1/min", "absorption rate of monomeric subcutaneous insulin"),
    "kd": ("1/min", "dissociation rate of non-monomeric insulin"),
    # subcutaneous glucose (sensor compartment)
    "ksc": ("1/min", "plasma -> subcutaneous glucose rate"),
    # steady state
    "u2ss": ("pmol/kg/min", "steady-state (basal) subcutaneous insulin infusion rate"),
}

PARAMETER_NAMES: tuple[str, ...] = tuple(PARAMETER_INFO)

# Columns of vpatient_params.csv holding the initial state: x0_ 1 .. x0_13
# (simglucose pads the one-digit indices with a space).
_INITIAL_STATE_KEYS = tuple(f"x0_{i:2d}" for i in range(1, N_STATES + 1))


def _as_batch(name: str, value: Any) -> np.ndarray:
    array = np.array(value, dtype=np.float64, ndmin=1)
    if array.ndim != 1:
        raise ValueError(f"parameter {name} must be a scalar or a 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"parameter {name} must be finite, got {array}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class ModelParams:
    """Named UVA/Padova parameters of a batch of N patients.

    Every field is a read-only float64 array of shape ``(N,)``; scalars given
    to the constructor are broadcast to the batch size. Units and meanings are
    in :data:`PARAMETER_INFO`.
    """

    BW: np.ndarray
    kmax: np.ndarray
    kmin: np.ndarray
    b: np.ndarray
    d: np.ndarray
    kabs: np.ndarray
    f: np.ndarray
    Vg: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    kp1: np.ndarray
    kp2: np.ndarray
    kp3: np.ndarray
    ki: np.ndarray
    Fsnc: np.ndarray
    Vm0: np.ndarray
    Vmx: np.ndarray
    Km0: np.ndarray
    p2u: np.ndarray
    Ib: np.ndarray
    ke1: np.ndarray
    ke2: np.ndarray
    Vi: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    m4: np.ndarray
    m30: np.ndarray
    ka1: np.ndarray
    ka2: np.ndarray
    kd: np.ndarray
    ksc: np.ndarray
    u2ss: np.ndarray

    def __post_init__(self) -> None:
        arrays = {name: _as_batch(name, getattr(self, name)) for name in PARAMETER_NAMES}
        size = max(a.size for a in arrays.values())
        for name, array in arrays.items():
            if array.size not in (1, size):
                raise ValueError(f"parameter {name} has {array.size} values, expected 1 or {size}")
            if array.size == 1 and size > 1:
                array = np.full(size, array[0])
                array.setflags(write=False)
            object.__setattr__(self, name, array)
        for name in ("BW", "Vg", "Vi", "Km0", "kmax", "kabs", "b", "d"):
            if np.any(getattr(self, name) <= 0.0):
                raise ValueError(f"parameter {name} must be > 0, got {getattr(self, name)}")
        if np.any(self.b >= 1.0):
            raise ValueError(f"parameter b must be < 1, got {self.b}")

    @property
    def size(self) -> int:
        """Number of patients N in the batch."""
        return int(self.BW.shape[0])

    @classmethod
    def from_mappings(cls, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> "ModelParams":
        """Parameters from one mapping or a sequence of mappings keyed by the model symbols.

        Extra keys (for example the other columns of a ``vpatient_params.csv``
        row) are ignored; a missing key raises ``ValueError``.
        """
        rows = [rows] if isinstance(rows, Mapping) else list(rows)
        if not rows:
            raise ValueError("need at least one parameter mapping")
        values: dict[str, list[float]] = {name: [] for name in PARAMETER_NAMES}
        for index, row in enumerate(rows):
            for name in PARAMETER_NAMES:
                try:
                    values[name].append(float(row[name]))
                except KeyError:
                    raise ValueError(f"parameter mapping {index} lacks {name!r}") from None
                except (TypeError, ValueError):
                    raise ValueError(f"parameter mapping {index}: {name}={row[name]!r} is not a number") from None
        return cls(**values)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain-data form (JSON-ready): name -> list of N floats."""
        return {name: getattr(self, name).tolist() for name in PARAMETER_NAMES}

    def take(self, index: Any) -> "ModelParams":
        """A new batch from patients ``index`` (an int array, a slice or a boolean mask).

        ``params.take(np.repeat(np.arange(params.size), k))`` gives each
        patient k times, e.g. for UKF sigma points or MPC candidates.
        """
        return ModelParams(**{name: np.atleast_1d(getattr(self, name)[index]) for name in PARAMETER_NAMES})

    def replace(self, **changes: Any) -> "ModelParams":
        """A copy with some parameters changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def concatenate(batches: Sequence["ModelParams"]) -> "ModelParams":
        """One batch holding the patients of several batches, in order."""
        if not batches:
            raise ValueError("need at least one batch")
        return ModelParams(
            **{name: np.concatenate([getattr(p, name) for p in batches]) for name in PARAMETER_NAMES}
        )


def initial_state_from_mapping(row: Mapping[str, Any]) -> np.ndarray:
    """Initial state (13,) from the ``x0_1`` .. ``x0_13`` entries of a parameter row.

    Accepts simglucose's spelling (``x0_ 1`` .. ``x0_ 9``, ``x0_10`` ..) and the
    unpadded one (``x0_1``). Units are those of :class:`twin.model.State`.
    """
    state = np.empty(N_STATES)
    for i, padded in enumerate(_INITIAL_STATE_KEYS):
        plain = f"x0_{i + 1}"
        if padded in row:
            value = row[padded]
        elif plain in row:
            value = row[plain]
        else:
            raise ValueError(f"parameter mapping lacks the initial state entry {plain!r}")
        state[i] = float(value)
    if not np.all(np.isfinite(state)):
        raise ValueError(f"initial state must be finite, got {state}")
    return state


def initial_states_from_mappings(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Initial states (N, 13) of a batch, one row per mapping."""
    if isinstance(rows, Mapping):
        rows = [rows]
    return np.stack([initial_state_from_mapping(row) for row in rows])
