"""Open-loop agreement: an oracle that looks ahead with the expert agrees, a policy that stands still
scores cosine 0 with an error equal to the motion, short chunks are an error."""

import dataclasses

import numpy as np
import pytest

from foundry.eval.open_loop import OpenLoopConfig, open_loop_agreement
from foundry.eval.rollouts import ActionChunkPolicy
from foundry.sim.experts import expert_action
from foundry.sim.tabletop import TabletopConfig, pose_vector, step_state

CFG = OpenLoopConfig(tasks=("push", "lift"), episodes_per_task=2, env=TabletopConfig(render=False))


class LookAhead(ActionChunkPolicy):
    """The noiseless expert simulated `steps` ahead from the current state: the reached poses."""

    def __init__(self, env, steps=10):
        self.env, self.steps = env, steps

    def reset(self, *, seed=None):
        pass

    def act(self, obs):
        st, poses = self.env.state.copy(), []
        for _ in range(self.steps):
            step_state(st, expert_action(st, self.env.spec), self.env.cfg)
            poses.append(pose_vector(st.gripper))
        return np.stack(poses)


class StandStill(LookAhead):
    def act(self, obs):
        return np.repeat(np.asarray(obs["pose"])[None], 10, 0)


def test_an_oracle_agrees_and_standing_still_does_not():
    good = open_loop_agreement(LookAhead, CFG)
    assert set(good) == {"push", "lift", "overall"} and good["overall"]["n"] >= 6
    assert good["overall"]["cosine"] > 0.9 and good["overall"]["within_45deg"] > 0.9
    assert good["overall"]["error_m"] < 0.3 * good["overall"]["motion_m"]
    still = open_loop_agreement(StandStill, CFG)
    assert still["overall"]["cosine"] == 0.0 and still["overall"]["n"] == good["overall"]["n"]
    assert still["overall"]["error_m"] == pytest.approx(still["overall"]["motion_m"])


def test_chunks_shorter_than_the_horizon_are_an_error():
    with pytest.raises(ValueError, match="chunks have 3 steps < horizon 5"):
        open_loop_agreement(lambda env: LookAhead(env, steps=3), dataclasses.replace(CFG, tasks=("lift",)))
    with pytest.raises(ValueError, match="every >= 1"):
        OpenLoopConfig(every=0)
