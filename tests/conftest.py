import os

from hypothesis import settings

# CI runs are reproducible (fixed seed); local runs explore new examples.
settings.register_profile("ci", derandomize=True, max_examples=60, deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
