"""Inference: token generation (this package), policy action prediction and serving (VLA stage)."""
