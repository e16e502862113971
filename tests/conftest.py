"""Unit tests run with one thread (PLATFORM.md: oversubscription is catastrophic) and deterministic kernels."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
