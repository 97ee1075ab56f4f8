"""Virtual populations: hundreds to thousands of patients around simglucose's 30.

The plant here is **glucotwin's batch twin** (:mod:`twin.model`, the
UVA/Padova 2008 equations of simglucose 0.2.11 integrated for N patients at
once), not simglucose's ``T1DPatient``: every output says so
(:data:`PLANT`). Meals, CGM noise and pump follow simglucose's own models.

Virtual patient ``j`` of a population with seed ``S``
-------------------------------------------------------

- **Base patient**: :func:`base_patient`: group ``j mod 3`` (adolescent,
  adult, child), number ``(j div 3) mod 10 + 1``; so patients 0, 1, 2 are
  adolescent#001, adult#001, child#001, and a population of 30 m has m
  patients on each of the 30 bases. Age and age group are the base's.
- **Physiology**: the base's simulator parameters with the multiplicative
  factors of :data:`VARIATIONS`, each ``exp(clip(sigma * z, -2 sigma, 2 sigma))``
  with ``z`` standard normal from ``numpy.random.default_rng([S, j])`` drawn in
  the order of the table (log-normal, truncated at 2 sigma: the documented
  bounds). Patient ``j`` does not depend on the population size.
- **Steady state**: in the model, insulin action on the liver ``kp3`` sets
  basal glucose production ``kp1 - kp2 Gp - kp3 Ib``; to keep the base's basal
  glucose ``Gb`` and basal production ``EGPb``, the basal insulin ``Ib`` and
  the steady-state infusion ``u2ss`` are divided by kp3's factor. The initial
  state is the exact steady state under ``u2ss``: the base's glucose states,
  insulin states recomputed from ``u2ss`` and the varied absorption rates,
  empty gut. Under its programmed basal and no meals a virtual patient stays
  at ``Gb`` (``tests/test_population.py``).
- **Clinical profile** (all its controller may use, DESIGN.md honesty rules):
  weight ``BW``; programmed basal ``u2ss * BW / 6000`` U/min (in U/h); total
  daily insulin = base TDI x (basal / base basal); carb ratio = base CR x s
  and correction factor = base CF x s / w, where s is the insulin-sensitivity
  factor and w the body-weight factor (in this model a gram of carbohydrate
  and a unit of insulin both act per kg of body weight, so CR does not depend
  on weight and CF does). The gastric, absorption and hepatic-share factors
  are not in the profile: the physiology differs from what the profile says.
- **Meals**: simglucose's ``RandomScenario(start_time=2025-01-01 00:00,
  seed=S * 1000000 + j + 1)``, the day's meals drawn at each midnight as in a
  simglucose run. **CGM**: simglucose's sensor noise model (Johnson
  distribution, AR(1) every 15 min, cubic interpolation; ``CGMNoise``) with the
  same seed, reproduced for a batch, clipped to the sensor's range; one
  control cycle per CGM sample (Dexcom: 3 min). **Pump**: simglucose's
  ``Insulet`` rounding and limits; a bolus is spread over one cycle.
- **Controller**: each patient has its own (``mpc``: glucotwin twin + MPC +
  safety supervisor personalized from the clinical profile with the
  population prior that leaves the base patient out; ``bb``: simglucose's
  BBController rule on the clinical profile; ``basal``: programmed basal only).
  The plant is vectorized over the patients of a chunk; chunks are the jobs
  of an engine (:mod:`sim.engine`). Results do not depend on the chunking,
  the engine or the number of workers.

Modules (each imports only those above it)
------------------------------------------

- :mod:`.simglucose_models`: simglucose's meal scenario, CGM noise and pump, for a batch
- :mod:`.spec`: :class:`PopulationSpec`, the run's constants and the per-patient seeds
- :mod:`.virtual_patients`: the factors, the virtual patients and the plant's substeps
- :mod:`.controllers`: :class:`ProfileBasalBolus` and :func:`make_policy`
- :mod:`.chunk`: one engine job, a chunk of patients in closed loop (:func:`simulate_chunk`)
- :mod:`.summary`: aggregation over the population (``summary.json``) and throughput
- :mod:`.outputs`: ``summary.json``, ``patients.csv`` and ``traces.npz``
- :mod:`.tables`: the text tables ``glucotwin population`` prints
- :mod:`.run`: :func:`run_population`, the entry point of ``sim/cli/population.py``
"""

from sim.population.chunk import ChunkResult, plan_chunks, simulate_chunk
from sim.population.controllers import ProfileBasalBolus, make_policy
from sim.population.run import PopulationResult, run_population
from sim.population.simglucose_models import (
    MIN_PER_DAY,
    PUMP,
    meal_schedule,
    pump_parameters,
    pump_u_per_min,
    sensor_noise,
    sensor_parameters,
)
from sim.population.spec import (
    CONTROLLER_DESCRIPTIONS,
    CONTROLLER_NAMES,
    MAX_SEED,
    MAX_SIZE,
    PLANT,
    SUMMARY_FORMAT,
    PopulationSpec,
    scenario_seed,
)
from sim.population.summary import (
    DISTRIBUTION_METRICS,
    TARGETS,
    build_population_summary,
    distribution,
    population_description,
    protocol_description,
    throughput,
)
from sim.population.tables import format_population_tables
from sim.population.virtual_patients import (
    VARIATIONS,
    Variation,
    VirtualPatient,
    base_patient,
    draw_factors,
    generate_population,
    plant_substeps,
    virtual_patient,
)

__all__ = [
    "CONTROLLER_DESCRIPTIONS",
    "CONTROLLER_NAMES",
    "DISTRIBUTION_METRICS",
    "MAX_SEED",
    "MAX_SIZE",
    "MIN_PER_DAY",
    "PLANT",
    "PUMP",
    "SUMMARY_FORMAT",
    "TARGETS",
    "VARIATIONS",
    "ChunkResult",
    "PopulationResult",
    "PopulationSpec",
    "ProfileBasalBolus",
    "Variation",
    "VirtualPatient",
    "base_patient",
    "build_population_summary",
    "distribution",
    "draw_factors",
    "format_population_tables",
    "generate_population",
    "make_policy",
    "meal_schedule",
    "plan_chunks",
    "plant_substeps",
    "population_description",
    "protocol_description",
    "pump_parameters",
    "pump_u_per_min",
    "run_population",
    "scenario_seed",
    "sensor_noise",
    "sensor_parameters",
    "simulate_chunk",
    "throughput",
    "virtual_patient",
]
