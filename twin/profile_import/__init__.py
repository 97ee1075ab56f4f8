"""Import a person's therapy profile from a Nightscout profile document or an oref0 ``profile.json``.

Both hold what the clinic programmed by time of day: basal rates, carb ratios, correction factors
(ISF) and targets. :func:`from_nightscout_profile` and :func:`from_oref0_profile` read them into a
:class:`twin.profile.PatientProfile` and return, beside it, the notes a person must read: every
conversion, assumption and setting not carried over. Nothing is guessed silently; a document that
is incomplete or that :class:`PatientProfile` would refuse raises one :class:`ProfileImportError`
naming the field. (The live configuration's stricter ranges, which know the total daily insulin,
are checked by the caller: ``glucotwin profile import`` runs the result through ``parse_config``.)

Formats, as their software reads them:

- Nightscout (cgm-remote-monitor ``lib/profilefunctions.js``, ``GET /api/v1/profile``: records
  newest first): ``{defaultProfile, startDate, units, store: {name: {dia, timezone, units,
  basal, carbratio, sens, target_low, target_high}}}``, each schedule ``[{time: "HH:MM",
  timeAsSeconds, value}]`` (the value from the last entry whose time has passed; a record without
  ``store`` is one legacy profile, "Default"). Units ``mmol`` are converted with Nightscout's
  ``MMOL_TO_MGDL`` (``lib/constants.json``: 18.01559 since 15.0.4; 18 until 14.2.x).
- oref0 (``lib/profile/*.js``, written by ``oref0-get-profile``): ``basalprofile [{i, start
  "HH:MM:SS", minutes, rate}]``, ``isfProfile {units, sensitivities [{offset, sensitivity}]}``,
  ``bg_targets {units, targets [{offset, low, high}]}``, ``carb_ratios {units "grams" |
  "exchanges", schedule [{offset, ratio}]}``, offsets in minutes after midnight; ``dia``,
  ``max_iob``, ``max_basal``, ``max_daily_safety_multiplier``, ``current_basal_safety_multiplier``.
  mmol/L is converted with oref0's factor 18 (``bin/oref0-get-profile.js``).

The single reference values of the profile (``carb_ratio_g_per_u``, ``correction_factor_mg_dl_per_u``,
``target_mg_dl``; the twin is personalized from them) are the time-weighted means of the schedules.
Neither format holds the total daily insulin: without one, it is estimated as daily basal / 0.5
(the common 50 % basal rule) and the notes say so. The schedules' clock becomes the profile's
``timezone`` (glucotwin reads every schedule at the local time of day there,
:meth:`PatientProfile.minute_of_day`); a document without one leaves it empty, and glucotwin then
reads the schedules at the UTC time of day, which the notes say too.
"""

from twin.profile_import.common import (BASAL_SHARE_OF_TDI, NIGHTSCOUT_MG_DL_PER_MMOL_L, OREF0_MG_DL_PER_MMOL_L,
                                        LimitSuggestion, ProfileImportError, detect_format)
from twin.profile_import.nightscout import from_nightscout_profile
from twin.profile_import.oref0 import from_oref0_profile, oref0_limit_suggestions

__all__ = ["BASAL_SHARE_OF_TDI", "NIGHTSCOUT_MG_DL_PER_MMOL_L", "OREF0_MG_DL_PER_MMOL_L", "LimitSuggestion",
           "ProfileImportError", "detect_format", "from_nightscout_profile", "from_oref0_profile",
           "oref0_limit_suggestions"]
