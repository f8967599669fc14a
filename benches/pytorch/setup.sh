#!/usr/bin/env bash
# Creates benches/.venv with PyTorch, transformers and NumPy for the reference benchmark and for regenerating
# the Hugging Face parity fixture. Never run in CI (it downloads from PyPI); run it once by hand.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet numpy safetensors torch transformers
"$here/.venv/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
