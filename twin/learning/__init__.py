"""Learning the twin from a person's own history (issue 18).

:mod:`twin.learning.history` puts CGM, insulin and carbs on a grid;
:mod:`twin.learning.fit` fits the twin's parameters with their uncertainty;
:mod:`twin.learning.learned` is the result (``twin.json``) and the twin it
gives; :mod:`twin.learning.therapy` the basal / ISF / CR it implies;
:mod:`twin.learning.habits` the person's usual meals.

Pure numpy and scipy; the readers of journals, traces and exports are in
``sim/learn``.
"""
