#!/usr/bin/env bash
# Install everything the pack's demo and tests need into .venv (idempotent):
# torch (CPU), a real ComfyUI host (devtools/comfy_host.py), the pack's and the tests'
# dependencies. Re-runs only when one of the files that define the install changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
STAMP="$VENV/.p3s-install-stamp"
want=$(cat devtools/bootstrap.sh devtools/comfy_host.py requirements.txt devtools/requirements-dev.txt \
  | sha256sum | cut -c1-16)

# The browser tests (tests/browser) drive the real frontend in Debian's headless chromium.
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[bootstrap] installing chromium (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[bootstrap] /usr/bin/chromium is missing: install it (apt-get install chromium) for tests/browser" >&2
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -m devtools.comfy_host check; then
  exit 0
fi

echo "[bootstrap] installing into $VENV (torch CPU, ComfyUI host, dependencies)"
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch 2.13.0 is the CPU build; torchvision from PyPI is a CUDA build that imports only
# after devtools/launch_comfyui.py declares its two ops, so it comes without dependencies.
$PIP install torch==2.13.0
$PIP install --no-deps torchvision==0.28.0 spandrel==0.4.2
"$VENV/bin/python" -m devtools.comfy_host install
$PIP install -r .host/comfyui-requirements.txt -r requirements.txt -r devtools/requirements-dev.txt
echo "$want" > "$STAMP"
echo "[bootstrap] done in $(( $(date +%s) - start )) s"
