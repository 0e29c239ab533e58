"""A ComfyUI server process owned by a batch worker (``--launch``): its own port and folders.

Each launched server gets a fresh base directory (``input``, ``output``, ``temp``, ``user``)
with the user's ``models`` and ``custom_nodes`` linked in, a free port on 127.0.0.1, ``--cpu``
when it was given no GPU, and dies with its worker: on Linux the kernel sends it SIGKILL when
the thread that started it ends (``PR_SET_PDEATHSIG``), so a killed worker or actor leaves no
ComfyUI behind. It is started in its own session, so the driver's Ctrl+C reaches the driver,
which stops its servers in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class LaunchError(RuntimeError):
    """A ComfyUI server could not be started; the message says why (with the end of its log)."""


@dataclass
class LaunchSpec:
    """How to start ComfyUI on a worker's machine (the paths are that machine's)."""

    comfyui: str
    """The ComfyUI folder (holds main.py)."""
    models: str | None = None
    """Models folder linked into each server (default ``COMFYUI/models``)."""
    custom_nodes: str | None = None
    """Custom nodes folder linked into each server (default ``COMFYUI/custom_nodes``)."""
    python: str = field(default_factory=lambda: sys.executable)
    launcher: str | None = None
    """A script run as ``python LAUNCHER COMFYUI ARGS...`` instead of ``COMFYUI/main.py``."""
    extra_args: list[str] = field(default_factory=list)
    startup_timeout: float = 300.0

    def check(self) -> None:
        """Refuse a spec whose paths do not exist on this machine, naming the path."""
        if not (Path(self.comfyui) / "main.py").is_file():
            raise LaunchError(f"--comfyui {self.comfyui}: no main.py there; point it at a ComfyUI folder.")
        for label, path in (("--models", self.models_dir), ("--custom-nodes", self.custom_nodes_dir)):
            if not Path(path).is_dir():
                raise LaunchError(f"{label} {path}: not a folder.")
        if self.launcher and not Path(self.launcher).is_file():
            raise LaunchError(f"--launcher {self.launcher}: not a file.")

    @property
    def models_dir(self) -> str:
        return self.models or str(Path(self.comfyui) / "models")

    @property
    def custom_nodes_dir(self) -> str:
        return self.custom_nodes or str(Path(self.comfyui) / "custom_nodes")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent (thread) ends (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ComfyProcess:
    """One ComfyUI server started from a :class:`LaunchSpec`; :meth:`start` again after it died."""

    def __init__(self, spec: LaunchSpec, name: str, gpu: bool):
        self.spec, self.name, self.gpu = spec, name, gpu
        # Named, not random: a restarted worker (a Ray actor brought back) takes over the folder.
        self.base = Path(tempfile.gettempdir()) / f"p3s-batch-{name}"
        shutil.rmtree(self.base, ignore_errors=True)
        for sub in ("input", "output", "temp", "user"):
            (self.base / sub).mkdir(parents=True)
        (self.base / "models").symlink_to(Path(spec.models_dir).resolve(), target_is_directory=True)
        (self.base / "custom_nodes").symlink_to(Path(spec.custom_nodes_dir).resolve(), target_is_directory=True)
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.base / "comfyui.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def start(self) -> None:
        """Start ComfyUI and return once ``/queue`` answers (raises :class:`LaunchError`)."""
        self.stop()
        self.port = free_port()
        spec = self.spec
        main = [spec.launcher, spec.comfyui] if spec.launcher else [str(Path(spec.comfyui) / "main.py")]
        args = [self.spec.python, *main, "--listen", "127.0.0.1", "--port", str(self.port)]
        args += ["--base-directory", str(self.base), "--disable-auto-launch", *self.spec.extra_args]
        if not self.gpu and "--cpu" not in args:
            args.append("--cpu")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.base / "comfyui.log", "ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.spec.comfyui,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        deadline = time.monotonic() + self.spec.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise LaunchError(f"{self.name}: ComfyUI exited with code {code}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/queue", timeout=5, trust_env=False).status_code == 200:
                    return
            time.sleep(0.5)
        self.stop()
        wait = self.spec.startup_timeout
        raise LaunchError(f"{self.name}: ComfyUI did not answer within {wait:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL, by process id."""
        if not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def remove_output(self, record: dict[str, str]) -> None:
        """Delete one fetched output file of this server (its own folder: disk does not grow with the batch)."""
        folder = {"output": "output", "temp": "temp"}.get(record.get("type", "output"))
        if folder:
            path = (self.base / folder / record.get("subfolder", "") / record["filename"]).resolve()
            if path.is_relative_to(self.base.resolve()):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
