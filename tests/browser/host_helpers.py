"""Helpers for tests against the real ComfyUI host: the reference image and the HTTP API."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from devtools.comfy_host import ComfyServer

IMAGE_NAME = "p3s_test.png"
IMAGE_W, IMAGE_H = 1600, 1200  # larger than the widget's 1024 px display limit on purpose


def make_reference_image(path: Path) -> None:
    """A blue background with a yellow disc (the subject) and an orange square (a look-alike)."""
    rgb = np.zeros((IMAGE_H, IMAGE_W, 3), np.uint8)
    rgb[:] = (40, 90, 160)
    cv2.circle(rgb, (int(0.3 * IMAGE_W), int(0.5 * IMAGE_H)), 220, (250, 200, 30), -1)
    cv2.rectangle(rgb, (1100, 250), (1300, 450), (250, 140, 30), -1)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def http_json(server: ComfyServer, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def fetch_image(server: ComfyServer, ref: dict) -> np.ndarray:
    query = urllib.parse.urlencode({k: ref[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as response:
        bgr = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def history_ids(server: ComfyServer) -> set[str]:
    """The ids of every prompt in the server's history."""
    return set(http_json(server, "/history"))


def wait_for_history(
    server: ComfyServer, prompt_id: str | None = None, exclude: set[str] = frozenset(), timeout: float = 60.0
) -> dict:
    """The finished history entry of ``prompt_id``, or of the first prompt not in ``exclude``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = http_json(server, f"/history/{prompt_id}" if prompt_id else "/history")
        for key, entry in history.items():
            status = entry.get("status", {})
            if key not in exclude and (status.get("completed") or status.get("status_str") == "error"):
                return entry
        time.sleep(0.25)
    raise TimeoutError(f"prompt {prompt_id or '(new)'} did not finish within {timeout:.0f} s")
