"""A small client for ComfyUI's HTTP API (standard library only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ComfyAPIError(RuntimeError):
    """The server refused a request or a prompt failed."""


@dataclass
class PromptResult:
    """The end of one queued prompt: its history entry."""

    prompt_id: str
    history: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.history.get("status", {}).get("status_str") == "success"

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``execution_error`` message (node_type, exception_message, ...) when it failed."""
        for kind, data in self.history.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def output_images(self, node_id: str) -> list[dict[str, str]]:
        """The ``{filename, subfolder, type}`` records of the images a node produced."""
        return self.history.get("outputs", {}).get(str(node_id), {}).get("images", [])

    def output_files(self) -> list[tuple[str, dict[str, str]]]:
        """Every file record of every node's outputs (images, gifs, ...), as ``(node_id, record)``."""
        files = []
        for node_id, outputs in self.history.get("outputs", {}).items():
            for records in outputs.values():
                if isinstance(records, list):
                    files += [(node_id, r) for r in records if isinstance(r, dict) and "filename" in r]
        return files


class ComfyClient:
    """Queue prompts, wait for them, fetch outputs."""

    def __init__(self, url: str, client_id: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout

    def _request(self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise ComfyAPIError(f"{path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._request(path))

    def object_info(self) -> dict[str, Any]:
        return self.get_json("/object_info")

    def submit(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """POST /prompt; returns the answer: ``prompt_id`` and ``node_errors``.

        ComfyUI queues a prompt when at least one output node is valid, and lists the invalid
        nodes in ``node_errors``; when none is valid it refuses (:class:`ComfyAPIError`).
        """
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        return json.loads(self._request("/prompt", body, {"Content-Type": "application/json"}))

    def queue(self, prompt: dict[str, Any]) -> str:
        """POST /prompt; returns the prompt id (validation errors raise :class:`ComfyAPIError`)."""
        return self.submit(prompt)["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> PromptResult:
        """Poll /history until the prompt has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if (
                entry
                and entry.get("status", {}).get("completed") is not None
                and (entry["status"].get("status_str") in ("success", "error"))
            ):
                return PromptResult(prompt_id, entry)
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict[str, Any], timeout: float = 600.0) -> PromptResult:
        """Queue a prompt and wait for its end."""
        return self.wait(self.queue(prompt), timeout=timeout)

    def interrupt(self) -> None:
        self._request("/interrupt", b"", {"Content-Type": "application/json"})

    def cancel(self, prompt_id: str) -> None:
        """Drop a prompt from the queue, or stop it if it is running (other prompts are left alone)."""
        headers = {"Content-Type": "application/json"}
        self._request("/queue", json.dumps({"delete": [prompt_id]}).encode(), headers)
        self._request("/interrupt", json.dumps({"prompt_id": prompt_id}).encode(), headers)

    def view(self, image: dict[str, str]) -> bytes:
        """GET /view for an output record."""
        return self._request("/view?" + urllib.parse.urlencode(image))

    def upload_image(self, path: Path, overwrite: bool = True, name: str | None = None) -> str:
        """POST /upload/image (under ``name``, default the file's name); returns the name to give LoadImage."""
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n{str(overwrite).lower()}\r\n',
        ]
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name or Path(path).name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        body = "".join(parts).encode() + head.encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        answer = json.loads(
            self._request("/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        )
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"
