"""The pack's workflow conversion (``eye_demo/workflow_api.py``) plus the tests' own substitution."""

from eye_test_support.pack import load_pack

load_pack()  # this checkout as ``eye_for_an_eye``, also for scripts run outside pytest

from eye_for_an_eye.eye_demo.workflow_api import *  # noqa: E402,F401,F403
from eye_for_an_eye.eye_demo.workflow_api import FRONTEND_ONLY_TYPES, MODE_BYPASS, MODE_NEVER  # noqa: E402,F401

# Default substitution of the e2e tests: no checkpoint file exists in the test environment.
TINY_CHECKPOINT = {"CheckpointLoaderSimple": "EyeTestTinyCheckpointLoader"}
