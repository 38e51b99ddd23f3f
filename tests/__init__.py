"""The streamsrv trial test suite.

Hypothesis runs under a deterministic profile so that the suite gives the same
result on every run; set ``HYPOTHESIS_PROFILE=explore`` to search more widely.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=200)
settings.register_profile("explore", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
