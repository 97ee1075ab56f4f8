"""Shared test settings.

Hypothesis runs derandomized (a fixed seed per test) so that CI is repeatable.
"""

from hypothesis import settings

settings.register_profile("glucotwin", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("glucotwin")
