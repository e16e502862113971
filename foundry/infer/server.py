"""A small local policy server (HTTP + JSON, stdlib only) so a simulator or robot in another process can ask
a policy for action chunks, and the client side of it.

Usage::

    server = PolicyServer(policy).start()               # 127.0.0.1, an ephemeral port; server.url
    client = PolicyClient(server.url)
    client.reset(seed=3)
    chunk = client.act(obs)                             # obs: {"images": {cam: (H, W, 3) uint8}, "pose", "instruction"}
    evaluate(functools.partial(RemotePolicy, url=server.url), cfg)     # closed-loop eval against the server
    server.close()

    python -m foundry.infer.server --policy runs/vla --port 8700       # serve a trained run (or "random")

Protocol (every response is a JSON object; errors are {"error": message} with a 4xx/5xx status):
  GET  /health -> {"status": "ok"}
  POST /reset  {"seed": int | null}                     -> {"status": "ok"}
  POST /observe  (the body of /act)                     -> {"status": "ok"}   # a step executed without re-planning
  POST /act    {"images": {camera: base64 PNG/JPEG | nested list (H, W, 3) of 0..255},
                "pose" (or "proprio"): [10 floats], "instruction": str, "task"?: str}
               -> {"actions": [[10 floats], ...]}   # (n, 10) absolute target poses
A bad request (malformed JSON, missing fields, wrong shapes) is a 400, a policy exception a 500; neither
stops the server. Requests are served on threads, but the policy is called under one lock.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

MAX_BODY = 64 << 20  # bytes


class BadRequest(ValueError):
    pass


class PolicyServerError(RuntimeError):
    pass


def decode_image(value, camera: str) -> np.ndarray:
    """base64 PNG/JPEG string or nested list -> (H, W, 3) uint8."""
    try:
        if isinstance(value, str):
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(value, validate=True))).convert("RGB"))
        else:
            img = np.asarray(value)
            if img.dtype.kind not in "iuf" or img.size == 0 or img.min() < 0 or img.max() > 255:
                raise BadRequest(f"images[{camera!r}]: a nested list must hold numbers in 0..255")
            img = img.astype(np.uint8)
    except BadRequest:
        raise
    except Exception as e:
        raise BadRequest(f"images[{camera!r}]: not a base64 PNG/JPEG or a nested list ({type(e).__name__})") from e
    if img.ndim != 3 or img.shape[2] != 3:
        raise BadRequest(f"images[{camera!r}]: want shape (H, W, 3), got {img.shape}")
    return img


def decode_observation(body, pose_dim: int | None = 10) -> dict:
    """A /act request body -> the observation dict a policy's `act` takes; BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
    if not isinstance(body.get("instruction"), str):
        raise BadRequest('missing field "instruction" (a string)')
    pose = body.get("pose", body.get("proprio"))
    if pose is None:
        raise BadRequest('missing field "pose" (or "proprio"): a list of floats')
    try:
        pose = np.asarray(pose, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadRequest(f'"pose" must be a list of numbers ({e})') from e
    if pose.ndim != 1 or (pose_dim is not None and pose.shape[0] != pose_dim) or not np.isfinite(pose).all():
        raise BadRequest(f'"pose" must be {pose_dim or "n"} finite numbers, got shape {pose.shape}')
    images = body.get("images", {})
    if not isinstance(images, dict):
        raise BadRequest('"images" must be an object {camera: image}')
    obs = {"images": {cam: decode_image(v, cam) for cam, v in images.items()}, "pose": pose,
           "instruction": body["instruction"]}  # fmt: skip
    if isinstance(body.get("task"), str):
        obs["task"] = body["task"]
    return obs


class _Handler(BaseHTTPRequestHandler):
    server: PolicyServer._HTTPServer

    def log_message(self, format, *args):  # quiet: one line per request would flood an evaluation
        pass

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._reply(200, {"status": "ok"})
        self._reply(404, {"error": f"unknown path {self.path!r}; GET /health, POST /act, /observe or /reset"})

    def do_POST(self):
        if self.path not in ("/act", "/observe", "/reset"):
            return self._reply(404, {"error": f"unknown path {self.path!r}; POST /act, /observe or /reset"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._reply(400, {"error": "Content-Length must be an integer"})
        if not 0 <= length <= MAX_BODY:
            return self._reply(413, {"error": f"body of {length} bytes: allowed 0..{MAX_BODY}"})
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._reply(400, {"error": f"malformed JSON: {e}"})
        app = self.server.app
        try:
            if self.path == "/reset":
                seed = body.get("seed") if isinstance(body, dict) else None
                if seed is not None and not isinstance(seed, int):
                    raise BadRequest(f'"seed" must be an integer or null, got {seed!r}')
                with app.lock:
                    app.policy.reset(seed=seed)
                return self._reply(200, {"status": "ok"})
            obs = decode_observation(body, app.pose_dim)
            if self.path == "/observe":
                with app.lock:
                    app.policy.observe(obs)
                return self._reply(200, {"status": "ok"})
            with app.lock:
                chunk = np.asarray(app.policy.act(obs), dtype=np.float64)
            if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != 10 or not np.isfinite(chunk).all():
                return self._reply(500, {"error": f"policy returned an invalid chunk of shape {chunk.shape}"})
            self._reply(200, {"actions": chunk.tolist()})
        except BadRequest as e:
            self._reply(400, {"error": str(e)})
        except Exception as e:  # a policy bug must not take the server down
            self._reply(500, {"error": f"policy raised {type(e).__name__}: {e}"})


@dataclasses.dataclass
class PolicyServer:
    """Serves `policy` (an ActionChunkPolicy: `reset(seed=)`, `act(obs) -> (n, 10)`, `observe(obs)`) in a
    background thread."""

    policy: object
    host: str = "127.0.0.1"  # loopback: set "0.0.0.0" only on a trusted network (no authentication)
    port: int = 0  # 0: an ephemeral port, see .url
    pose_dim: int | None = 10

    class _HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        app: PolicyServer

    def __post_init__(self):
        self.lock = threading.Lock()
        self._httpd: PolicyServer._HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PolicyServer:
        self._httpd = self._HTTPServer((self.host, self.port), _Handler)
        self._httpd.app = self
        # poll every 50 ms so close() returns quickly (the default 0.5 s slows every test's teardown)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join()
            self._httpd = self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def encode_image(img: np.ndarray) -> str:
    """(H, W, 3) uint8 -> base64 PNG (lossless: the policy sees exactly the simulator's pixels)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class PolicyClient:
    """Talks to a `PolicyServer`; errors raise `PolicyServerError` with the server's message."""

    def __init__(self, url: str, *, timeout: float = 60.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def _request(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", "")
            except (json.JSONDecodeError, AttributeError):
                message = ""
            raise PolicyServerError(f"{self.url}{path}: HTTP {e.code}: {message}") from None

    def health(self) -> dict:
        return self._request("/health")

    def reset(self, *, seed: int | None = None) -> None:
        self._request("/reset", {"seed": None if seed is None else int(seed)})

    def act(self, observation: dict) -> np.ndarray:
        """observation (as from `TabletopEnv`: images (H, W, 3) uint8 or base64 strings) -> (n, 10) float32."""
        return np.asarray(self._request("/act", _observation_payload(observation))["actions"], dtype=np.float32)

    def observe(self, observation: dict) -> None:
        """Tell the policy about a step executed without re-planning (its frame history)."""
        self._request("/observe", _observation_payload(observation))


def _observation_payload(observation: dict) -> dict:
    images = observation.get("images", {})  # arrays are sent as PNG, strings as they are (encoded already)
    payload = {"images": {cam: v if isinstance(v, str) else encode_image(v) for cam, v in images.items()},
               "pose": np.asarray(observation["pose"], dtype=np.float64).tolist(),
               "instruction": observation["instruction"]}  # fmt: skip
    if "task" in observation:
        payload["task"] = observation["task"]
    return payload


class RemotePolicy:
    """An ActionChunkPolicy backed by a server; `functools.partial(RemotePolicy, url=...)` is a picklable
    evaluation factory (the env argument is unused: the server holds the policy)."""

    def __init__(self, env=None, *, url: str, timeout: float = 60.0):
        self.client = PolicyClient(url, timeout=timeout)

    def reset(self, *, seed: int | None = None) -> None:
        self.client.reset(seed=seed)

    def act(self, observation: dict) -> np.ndarray:
        return self.client.act(observation)

    def observe(self, observation: dict) -> None:
        self.client.observe(observation)


def main(policy: str = "random", host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve `random` (baseline) or a trained run directory until interrupted."""
    from foundry.sim.tabletop import TabletopConfig, TabletopEnv

    if policy == "random":
        from foundry.eval.rollouts import RandomPolicy

        served = RandomPolicy(TabletopEnv(TabletopConfig(render=False)))
    else:
        from foundry.eval.rollouts import load_trained_policy

        served = load_trained_policy(None, run_dir=policy)
    server = PolicyServer(served, host=host, port=port).start()
    print(f"serving {policy} at {server.url} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    import tyro

    tyro.cli(main)
