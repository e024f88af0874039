#!/usr/bin/env bash
# Create .venv (if missing) and install inertia into it; `--test` adds the test dependencies
# (pytest, scipy, Ray, whose executor the tests run on a local CPU cluster, gradio and playwright for
# `inertia ui`, and, as root on Debian, chromium for its browser test).
#
# torch is installed first and pinned, because an unpinned torch pulled in by a dependency
# resolves to a multi-GB CUDA build. TORCH_SPEC overrides the pin (e.g. a CUDA build on a GPU host).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test,ray]"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".${extras}"
# The lpips_temporal metric reads LPIPS's linear heads from the lpips wheel; --no-deps because its
# declared torchvision requirement would replace the pinned torch (inertia builds AlexNet itself).
.venv/bin/python -m pip install -q --no-deps lpips==0.1.4
# The browser test of `inertia ui` drives Debian's Chromium (tests/test_ui_browser.py; skipped without it).
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; the browser test of inertia ui will be skipped"
fi
.venv/bin/python -c "import torch, diffusers, inertia; print(f'inertia {inertia.__version__}: torch {torch.__version__}, diffusers {diffusers.__version__}')"
