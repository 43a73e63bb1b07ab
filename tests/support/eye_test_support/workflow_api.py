"""The pack's workflow conversion (``eye_demo/workflow_api.py``) plus the tests' own substitution."""

from eye_for_an_eye.eye_demo.workflow_api import *  # noqa: F401,F403
from eye_for_an_eye.eye_demo.workflow_api import FRONTEND_ONLY_TYPES, MODE_BYPASS, MODE_NEVER  # noqa: F401

# Default substitution of the e2e tests: no checkpoint file exists in the test environment.
TINY_CHECKPOINT = {"CheckpointLoaderSimple": "EyeTestTinyCheckpointLoader"}
