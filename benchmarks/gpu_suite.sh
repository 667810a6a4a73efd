#!/usr/bin/env bash
# The GPU suite (docs/performance.md, "GPU suite"): run on a CUDA machine with the project installed
# (`pip install -e '.[hf]'`); about 8 minutes. Extra arguments go to benchmarks/gpu_suite.py.
set -euo pipefail
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_suite: no CUDA device visible to torch; this suite needs a GPU (CI runs --smoke --device cpu)" >&2
  exit 2
fi
exec "$PYTHON" benchmarks/gpu_suite.py --out results/gpu_suite.json "$@"
