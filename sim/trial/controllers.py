"""glucotwin's controller as a simglucose ``Controller``.

``SimglucoseController()`` with no arguments personalizes itself from the
``patient_name`` that simglucose passes, using that patient's clinical
profile only and a population prior that leaves the patient out (DESIGN.md
honesty rules). It also accepts an explicit :class:`~twin.profile.PatientProfile`.
``meal_announcement=True`` is hybrid closed loop (announced carbohydrates
from simglucose's meal information), ``False`` fully closed loop.
"""

from __future__ import annotations

from typing import Any

from simglucose.controller.base import Action, Controller

from controller.twin_policy import ControlSettings, TwinMPCPolicy
from sim.trial.adapter import PolicyController
from sim.trial.cohort import clinical_profile
from twin.personalize import PopulationPrior, Twin, default_prior, personalize
from twin.profile import PatientProfile


class SimglucoseController(PolicyController):
    def __init__(self, profile: PatientProfile | None = None, meal_announcement: bool = True,
                 prior: PopulationPrior | None = None, settings: ControlSettings | None = None,
                 twin: Twin | None = None) -> None:
        self._twin = twin
        if twin is not None and profile is None:
            profile = twin.profile
        self._profile = profile
        self._prior = prior
        self._settings = settings
        self._policy_for: str | None = None
        policy = self._build(profile) if profile is not None else None
        super().__init__(policy, meal_announcement=meal_announcement)  # type: ignore[arg-type]

    def _build(self, profile: PatientProfile) -> TwinMPCPolicy:
        if self._twin is not None:
            self._policy_for = profile.name
            return TwinMPCPolicy(self._twin, self._settings)
        if self._prior is not None:
            prior = self._prior
        elif self._profile is None:
            from sim.trial.priors import population_prior  # leave-one-out over the simglucose cohort

            prior = population_prior(exclude=profile.name)
        else:
            prior = default_prior()
        self._policy_for = profile.name
        return TwinMPCPolicy(personalize(profile, prior), self._settings)

    def policy(self, observation: Any, reward: float, done: bool, **info: Any):
        if self._policy is None or (self._profile is None and info.get("patient_name") != self._policy_for):
            name = info.get("patient_name")
            if name is None:
                raise ValueError("SimglucoseController needs a profile or simglucose's patient_name")
            self._policy = self._build(clinical_profile(name))
        return super().policy(observation, reward, done, **info)

    def reset(self) -> None:
        if self._policy is not None:
            self._policy.reset()
        self.last_input = None
        self.last_dose = None


def mpc_controller(patient_name: str, arm: str) -> SimglucoseController:
    """Factory for ``glucotwin trial --controller mpc``: personalizes itself from simglucose's patient_name."""
    return SimglucoseController(meal_announcement=arm == "hcl")


def previous_mpc_controller(patient_name: str, arm: str) -> SimglucoseController:
    """Factory for ``glucotwin trial --controller mpc-previous``: glucotwin's controller as it was at
    eac2684 (the MPC alone decides the meal insulin, no meal bolus), for comparisons in the same run
    (``glucotwin bench`` times both)."""
    return SimglucoseController(meal_announcement=arm == "hcl", settings=ControlSettings(meal_bolus=None))


class LearnedTwinMPC:
    """Factory for ``glucotwin trial --twin DIR``: glucotwin's controller on the twin learned for each
    patient (``DIR/<patient>.json`` from ``glucotwin learn``). Picklable, so worker processes build it."""

    def __init__(self, twin_dir: str) -> None:
        self.twin_dir = str(twin_dir)
        self.__name__ = "mpc-learned"

    def __call__(self, patient_name: str, arm: str) -> SimglucoseController:
        from pathlib import Path

        from twin.learning.learned import load_learned_twin

        path = Path(self.twin_dir) / f"{patient_name}.json"
        if not path.exists():
            raise FileNotFoundError(f"no learned twin for {patient_name}: {path} (run glucotwin learn first)")
        twin = load_learned_twin(path)
        if twin.profile.name != patient_name:
            raise ValueError(f"{path} is the twin of {twin.profile.name}, not {patient_name}")
        return SimglucoseController(meal_announcement=arm == "hcl", twin=twin)


# --- a user's controller: glucotwin trial --controller my_pkg.module:MyController ----------------
#
# What it is given is what simglucose gives its controllers, nothing more: it is built per patient
# (see UserControllerFactory for the construction rule), its ``reset()`` is called once before the
# run and its ``policy(observation, reward, done, **info)`` once per sample, with simglucose's own
# ``info`` (``meal`` replaced by the announced meal of the arm: HCL at meal time, FCL nothing), as
# for every built-in controller. It never gets the environment and it has no glucotwin safety
# supervisor: its action goes to simglucose's pump as returned.

USER_CONSTRUCTOR_KWARGS = ("init_state", "patient_name", "profile")
USER_INIT_STATE = 0  # simglucose's README builds its example controller as MyController(0)
USER_CONTROLLER_NOTE = "user controller, no glucotwin safety supervisor"
# The keyword arguments simglucose's T1DSimEnv passes a controller's policy (env.reset/env.step info).
SIMGLUCOSE_INFO_KEYS = ("sample_time", "patient_name", "meal", "patient_state", "time", "bg", "lbgi", "hbgi", "risk")
_USAGE = ("give a simglucose Controller subclass or instance, or a callable "
          "policy(observation, reward, done, **info) returning Action(basal, bolus) in U/min")


class UserControllerError(ValueError):
    """A ``--controller MODULE:ATTR`` that cannot be run; the message is one line, for the CLI."""


def is_user_spec(name: str) -> bool:
    """True for ``module:attr`` (a user's controller), False for a built-in name such as ``mpc``."""
    return ":" in name


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _split_spec(spec: str) -> tuple[str, str]:
    module_name, sep, attr = spec.partition(":")
    if not (sep and module_name and attr and all(p.isidentifier() for p in module_name.split("."))
            and all(p.isidentifier() for p in attr.split("."))):
        raise UserControllerError(f"controller {spec!r}: expected MODULE:ATTR, e.g. my_pkg.module:MyController")
    return module_name, attr


def load_user_object(spec: str, search_path: str | None = None):
    """Import ``module:attr`` (``attr`` may be dotted), with ``search_path`` (default: none added) first on sys.path."""
    import importlib
    import sys

    module_name, attr = _split_spec(spec)
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            where = f"in {search_path} or on sys.path" if search_path else "on sys.path"
            raise UserControllerError(f"controller {spec!r}: no module named {exc.name!r} {where} (run glucotwin "
                                      "from the directory that holds it, or add its directory to PYTHONPATH)") from None
        raise UserControllerError(f"controller {spec!r}: importing {module_name} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's module raised while importing (SyntaxError included)
        raise UserControllerError(f"controller {spec!r}: importing {module_name} failed: {_one_line(exc)}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserControllerError(f"controller {spec!r}: module {module_name} has no attribute {attr!r}") from None
    return obj


def _implements(obj, method: str) -> bool:
    """``obj`` (a class or an instance) has ``method``, and not simglucose's base one that raises."""
    found = getattr(obj, method, None)
    return callable(found) and getattr(found, "__func__", found) is not getattr(Controller, method)


def _constructor_kwargs(cls: type, spec: str) -> tuple[str, ...]:
    """The names among USER_CONSTRUCTOR_KWARGS that ``cls``'s signature asks for; refuses other required ones."""
    import inspect

    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to read (e.g. a C extension): built with no arguments
        return ()
    names = []
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in USER_CONSTRUCTOR_KWARGS and p.kind is not p.POSITIONAL_ONLY:
            names.append(p.name)
        elif p.default is p.empty:
            raise UserControllerError(
                f"controller {spec!r}: cannot build {cls.__name__}: its parameter {p.name!r} has no default "
                f"(glucotwin passes only {', '.join(USER_CONSTRUCTOR_KWARGS)}, by name, to a class that asks for them)")
    return tuple(names)


def _check_policy_signature(fn, spec: str, unbound: bool = False) -> None:
    """Refuse a policy that cannot take (observation, reward, done) and simglucose's info (``unbound``: a
    class's function, which also takes self)."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # nothing to check before it runs
        return
    try:
        signature.bind(*((None,) if unbound else ()), None, 0.0, False, **{key: None for key in SIMGLUCOSE_INFO_KEYS})
    except TypeError:
        name = getattr(fn, "__name__", type(fn).__name__)
        raise UserControllerError(f"controller {spec!r}: {name}{signature} cannot be called as "
                                  "policy(observation, reward, done, **info)") from None


def user_controller_kind(obj, spec: str) -> str:
    """``class``, ``instance`` or ``callable``; a UserControllerError for anything that is not a controller."""
    import inspect

    if inspect.isclass(obj):
        for method in ("policy", "reset"):
            if not _implements(obj, method):
                raise UserControllerError(
                    f"controller {spec!r}: class {obj.__name__} is not a controller: it does not implement "
                    f"{method}() ({_USAGE})")
        _check_policy_signature(obj.policy, spec, unbound=True)
        _constructor_kwargs(obj, spec)
        return "class"
    if callable(getattr(obj, "policy", None)):
        for method in ("policy", "reset"):
            if not _implements(obj, method):
                raise UserControllerError(f"controller {spec!r}: {type(obj).__name__} object does not implement "
                                          f"{method}() ({_USAGE})")
        _check_policy_signature(obj.policy, spec)
        return "instance"
    if callable(obj):
        _check_policy_signature(obj, spec)
        return "callable"
    raise UserControllerError(f"controller {spec!r} is of type {type(obj).__name__}, not a controller: {_USAGE}")


class UserController(Controller):
    """A user's controller as ``glucotwin trial`` runs it: its ``policy`` and ``reset``, nothing else.

    There is no glucotwin safety supervisor: the action goes to simglucose's pump as returned (the
    pump rounds it to its increments and clips it to its limits, as in simglucose). An action that
    is not ``Action(basal, bolus)`` with finite numbers stops the run with a one-line error.
    """

    def __init__(self, policy, reset, spec: str, patient_name: str) -> None:
        super().__init__(init_state=None)
        self._policy, self._reset = policy, reset
        self.spec, self.patient_name = spec, patient_name

    def policy(self, observation: Any, reward: float, done: bool, **info: Any) -> Action:
        import math

        action = self._policy(observation, reward, done, **info)
        try:
            basal, bolus = float(action.basal), float(action.bolus)
        except (AttributeError, TypeError, ValueError):
            raise UserControllerError(f"controller {self.spec!r} returned {action!r} for {self.patient_name} at "
                                      f"{info.get('time')}: expected Action(basal, bolus) in U/min") from None
        if not (math.isfinite(basal) and math.isfinite(bolus)):
            raise UserControllerError(f"controller {self.spec!r} returned basal {basal!r}, bolus {bolus!r} U/min for "
                                      f"{self.patient_name} at {info.get('time')}: not finite numbers")
        return Action(basal=basal, bolus=bolus)

    def reset(self) -> None:
        self._reset()


def _no_reset() -> None:
    """A plain callable policy has no state of its own to reset."""


class UserControllerFactory:
    """``glucotwin trial --controller MODULE:ATTR``: a user's controller, built per patient.

    ``ATTR`` (imported from ``search_path``, default the current directory, then sys.path) is:

    - a class with ``policy`` and ``reset`` (a ``simglucose.controller.base.Controller``
      subclass): built once per patient. Its constructor gets, by name and only if its
      signature has a parameter of that name: ``init_state=0`` (as simglucose's README builds
      ``MyController(0)``), ``patient_name`` (e.g. ``"adult#001"``) and ``profile`` (the
      clinical profile, :class:`twin.profile.PatientProfile`: weight, TDI, carb ratio,
      correction factor, age, programmed basal, the only patient facts a controller may use).
      Any other parameter must have a default; ``BBController()`` and ``PIDController()`` qualify.
    - an instance with ``policy`` and ``reset``: deep-copied per patient;
    - a plain callable ``policy(observation, reward, done, **info)``: called as is; nothing to reset.

    Picklable (only names are kept): worker processes import the module themselves.
    """

    def __init__(self, spec: str, search_path: str | None = None) -> None:
        import os
        from pathlib import Path

        self.spec = spec
        self.search_path = str(Path(search_path or os.getcwd()).resolve())
        obj = load_user_object(spec, self.search_path)
        self.kind = user_controller_kind(obj, spec)
        self.constructor_kwargs = _constructor_kwargs(obj, spec) if self.kind == "class" else ()
        self.source = _source_of(obj, self.search_path)
        self.__name__ = spec

    @property
    def label(self) -> str:
        """The controller name of the summary: the spec and the note that there is no safety supervisor."""
        return f"{self.spec} ({USER_CONTROLLER_NOTE})"

    def describe(self) -> dict[str, Any]:
        """What summary.json records about the user's controller (to read and rerun the result)."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "constructor_kwargs": list(self.constructor_kwargs),
            "init_state": USER_INIT_STATE if "init_state" in self.constructor_kwargs else None,
            "source": self.source,
            "safety_supervisor": False,
            "info": "simglucose's policy info (" + ", ".join(SIMGLUCOSE_INFO_KEYS) + "); meal: the announced "
                    "meal (HCL at meal time, FCL none)",
        }

    def __call__(self, patient_name: str, arm: str) -> UserController:
        obj = load_user_object(self.spec, self.search_path)
        if self.kind == "class":
            values = {"init_state": USER_INIT_STATE, "patient_name": patient_name}
            if "profile" in self.constructor_kwargs:
                values["profile"] = clinical_profile(patient_name)
            inner = obj(**{name: values[name] for name in self.constructor_kwargs})
            return UserController(inner.policy, inner.reset, self.spec, patient_name)
        if self.kind == "instance":
            import copy

            try:
                inner = copy.deepcopy(obj)
            except Exception as exc:
                raise UserControllerError(f"controller {self.spec!r}: cannot copy the instance for "
                                          f"{patient_name}: {_one_line(exc)}") from None
            return UserController(inner.policy, inner.reset, self.spec, patient_name)
        return UserController(obj, _no_reset, self.spec, patient_name)


def _source_of(obj, search_path: str) -> dict[str, str] | None:
    """The file that defines ``obj`` (relative to ``search_path`` when inside it) and its SHA-256, so a
    result names the code that made it."""
    import hashlib
    import inspect
    from pathlib import Path

    try:
        path = Path(inspect.getsourcefile(obj) or inspect.getfile(obj)).resolve()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (TypeError, OSError):
        return None
    try:
        shown = str(path.relative_to(search_path))
    except ValueError:
        shown = str(path)
    return {"file": shown, "sha256": digest}


def user_controller_factory(spec: str, search_path: str | None = None) -> UserControllerFactory:
    """The factory of ``--controller MODULE:ATTR`` (a UserControllerError when it cannot be run)."""
    return UserControllerFactory(spec, search_path)
