"""A simulated 2-D tabletop for robot-policy data and closed-loop evaluation (numpy + PIL, no physics engine).

Modules, bottom up: `tabletop` (config, state, kinematic dynamics; `TabletopEnv` runs them with the next
two), `tasks` (task families: scene samplers, instructions, success tests), `render` (top-down "scene" and
egocentric "wrist" cameras), `experts` (scripted state-machine experts per task family), `rollout` (run a
policy for an episode -> `Episode`, `expert_episode`, `random_policy`), `make_demos` (the command that
writes expert demonstrations as robotics shards + statistics). Example::

    from foundry.sim.rollout import TASK_FAMILIES, expert_episode
    from foundry.sim.tabletop import TabletopConfig

    ep, ok = expert_episode(TabletopConfig(image_size=64), seed=0, task="push", noise=0.5)
    ep.lowdim["action"]          # (T, 10) absolute target poses: xyz + 6-D rotation + gripper
    ep.images["wrist"]           # (T, 64, 64, 3) uint8
"""
