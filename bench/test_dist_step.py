"""Data-parallel scaling of the LLM train step on this machine: 1 process vs 2 processes (torchrun, gloo),
one thread each, 8 x 256 tokens per process (weak scaling), the `11m` shape with vocabulary 4096, eager
fp32, AdamW + clipping; the 2-process step includes the flat-buffer gradient all-reduce.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_dist_step.py --benchmark-columns=mean,rounds -s

Each round is one job (process start, warm-up and timed steps); the step time and samples/s per process
measured inside the job are in `extra_info` and printed. GPU (NCCL) scaling cannot be measured here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "bench/dist_step_job.py"
LAUNCH = {
    1: [sys.executable],
    2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
}


@pytest.mark.parametrize("processes", [1, 2])
def test_llm_step_scaling(benchmark, tmp_path, processes):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}

    def job():
        done = subprocess.run([*LAUNCH[processes], str(JOB), str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    benchmark.pedantic(job, rounds=1, iterations=1)
    result = json.loads(out.read_text())
    benchmark.extra_info.update({k: round(v, 4) for k, v in result.items()})
    print(f"\n{processes} process(es): step {result['step_s'] * 1e3:.0f} ms, {result['samples_per_s']:.1f} samples/s, "
          f"{result['samples_per_s_per_process']:.1f} samples/s per process")  # fmt: skip
