#!/usr/bin/env bash
# Set up .venv for motionrefine (Debian, Python 3.11). Idempotent: returns at once when
# .venv already matches requirements.txt and pyproject.toml and imports.
#
# torch is installed first, pinned, so nothing later pulls a multi-GB CUDA build:
# - here pip finds the CPU wheel of torch 2.13.0 on the local disk (pip's find-links);
# - elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (or .../whl/cu12x);
# - or install a CUDA build of torch==2.13.0 into .venv yourself before running this.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=.venv/.setup-complete
want=$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && .venv/bin/python -c "import motionrefine, torch, av, snakemake, pytest, selenium" 2>/dev/null; then
  echo "setup: .venv is up to date"
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" torch==2.13.0 --index-url "$TORCH_INDEX_URL"
else
  "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" -r requirements.txt -r requirements-test.txt
"${pip[@]}" -e ".[test]"
echo "$want" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
