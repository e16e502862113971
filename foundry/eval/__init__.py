"""Evaluation: caption attribute accuracy (VLM), closed-loop rollouts and statistics (VLA)."""
