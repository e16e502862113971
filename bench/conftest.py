"""Benchmarks run with the machine's threads and OMP_WAIT_POLICY=PASSIVE (PLATFORM.md)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
