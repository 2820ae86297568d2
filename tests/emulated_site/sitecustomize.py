"""On PYTHONPATH (with tests/ after it), every Python process starts on the
emulated GPU: see tests/emulated_gpu_plugin.py. Never on CI's path."""

import emulated_gpu_plugin  # noqa: F401
