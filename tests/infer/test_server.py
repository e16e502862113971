"""Policy server: round trip, error responses that leave the server running, evaluation against it."""

import functools
import http.client
import json
from urllib.parse import urlparse

import numpy as np
import pytest

from foundry.eval.rollouts import EvalConfig, ExpertPolicy, RandomPolicy, evaluate, run_episode
from foundry.infer.server import PolicyClient, PolicyServer, PolicyServerError, RemotePolicy, encode_image
from foundry.sim.tabletop import TabletopConfig, TabletopEnv

FAST = TabletopConfig(render=False)


class Recorder:
    """Returns a chunk built from the pose; remembers what it saw; misbehaves on request."""

    def __init__(self):
        self.seen, self.seeds, self.observed = [], [], []

    def reset(self, *, seed=None):
        self.seeds.append(seed)

    def act(self, obs):
        self.seen.append(obs)
        if obs["instruction"] == "raise":
            raise RuntimeError("policy bug")
        if obs["instruction"] == "bad shape":
            return np.zeros((3, 4))
        return np.stack([obs["pose"], obs["pose"] + 1])  # (2, 10)

    def observe(self, obs):
        self.observed.append(obs)


@pytest.fixture
def served():
    policy = Recorder()
    with PolicyServer(policy) as server:
        yield server, policy


def post(url: str, path: str, body: bytes) -> tuple[int, dict]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_round_trip_with_images(served):
    server, policy = served
    assert server.url.startswith("http://127.0.0.1:")
    env = TabletopEnv(TabletopConfig(image_size=32))
    obs = env.reset(seed=0, task="stack")
    client = PolicyClient(server.url)
    assert client.health() == {"status": "ok"}
    client.reset(seed=7)
    chunk = client.act(obs)
    assert policy.seeds == [7] and chunk.shape == (2, 10) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk[1], obs["pose"] + 1, rtol=1e-6)
    seen = policy.seen[-1]
    assert seen["instruction"] == obs["instruction"] and seen["task"] == "stack"
    assert set(seen["images"]) == {"scene", "wrist"}
    np.testing.assert_array_equal(seen["images"]["wrist"], obs["images"]["wrist"])  # PNG is lossless
    client.observe(obs)  # a step executed without re-planning reaches the policy's history
    assert len(policy.observed) == 1 and len(policy.seen) == 1
    np.testing.assert_array_equal(policy.observed[0]["images"]["scene"], obs["images"]["scene"])
    # nested lists work too, "proprio" stands for "pose"
    body = {"images": {"scene": obs["images"]["scene"].tolist()}, "proprio": obs["pose"].tolist(), "instruction": "x"}
    status, reply = post(server.url, "/act", json.dumps(body).encode())
    assert status == 200 and np.asarray(reply["actions"]).shape == (2, 10)
    np.testing.assert_array_equal(policy.seen[-1]["images"]["scene"], obs["images"]["scene"])


def test_bad_requests_get_errors_and_the_server_survives(served):
    server, _ = served
    pose = [0.0] * 10
    ok = {"pose": pose, "instruction": "go"}
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"pose": pose}).encode(), 400, "instruction"),
        (json.dumps({"instruction": "go"}).encode(), 400, "pose"),
        (json.dumps({**ok, "pose": [0.0] * 3}).encode(), 400, "shape (3,)"),
        (json.dumps({**ok, "pose": ["a"] * 10}).encode(), 400, "pose"),
        (json.dumps({**ok, "images": {"scene": "not-base64!"}}).encode(), 400, "images['scene']"),
        (json.dumps({**ok, "images": {"scene": [[1, 2], [3, 4]]}}).encode(), 400, "(H, W, 3)"),
        (json.dumps({**ok, "images": {"scene": [[[300, 0, 0]]]}}).encode(), 400, "0..255"),
        (json.dumps({**ok, "instruction": "raise"}).encode(), 500, "RuntimeError: policy bug"),
        (json.dumps({**ok, "instruction": "bad shape"}).encode(), 500, "(3, 4)"),
    ]
    for body, status, message in cases:
        got, reply = post(server.url, "/act", body)
        assert got == status and message in reply["error"], (body, got, reply)
    assert post(server.url, "/nope", b"{}")[0] == 404
    assert post(server.url, "/reset", json.dumps({"seed": "x"}).encode())[0] == 400
    client = PolicyClient(server.url)
    with pytest.raises(PolicyServerError, match="HTTP 500: policy raised RuntimeError"):
        client.act({"pose": np.zeros(10), "instruction": "raise"})
    assert client.health() == {"status": "ok"}
    img = encode_image(np.zeros((8, 8, 3), np.uint8))
    assert client.act({"pose": np.zeros(10), "instruction": "go", "images": {"c": img}}).shape == (2, 10)


def test_evaluation_against_a_served_policy():
    env = TabletopEnv(FAST)
    with PolicyServer(ExpertPolicy(env)) as server:  # the served expert reads the state of this env
        remote = RemotePolicy(url=server.url)
        records = [run_episode(env, remote, task=t, seed=s) for t, s in [("push", 1), ("lift", 2)]]
    local = [run_episode(env, ExpertPolicy(env), task=t, seed=s) for t, s in [("push", 1), ("lift", 2)]]
    assert records == local and all(r["is_success"] for r in records)

    cfg = EvalConfig(tasks=("push",), episodes_per_task=2, env=FAST)
    with PolicyServer(RandomPolicy(TabletopEnv(FAST))) as server:  # reset(seed=) travels to the server
        remote_records = evaluate(functools.partial(RemotePolicy, url=server.url, timeout=10), cfg)
    assert remote_records == evaluate(RandomPolicy, cfg)
