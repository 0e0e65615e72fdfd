#!/usr/bin/env bash
# GPU check: the kernel and encoder tests on CuPy, then the GPU benchmarks, results in a folder.
#
# Run on a machine with an NVIDIA GPU where OmniLake and CuPy import (`pip install ".[test,gpu]"`;
# the check itself needs only the package with NumPy, tokenizers and safetensors, plus faiss-cpu
# for the top-k comparison and sentence-transformers for the encoder's), with the model fetched
# (`omnilake models fetch minilm`). On a machine with no package index, install the wheels
# (`pip install --no-deps --target DIR`, then PYTHONPATH=DIR) and copy the model folder there
# (OMNILAKE_MODEL_DIR=its parent; HF_HUB_OFFLINE=1 keeps sentence-transformers off the network):
#     bash bench/gpu_check.sh [RESULTS_DIR]        (default: $OUT, else ./gpu-results)
# Then copy the tables from RESULTS_DIR/*.md into bench/RESULTS.md with the card's name.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-./gpu-results}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# The checkout's omnilake/ folder is only a part of the package: import the installed one.
export PYTHONSAFEPATH=1

python3 - <<'PY' 2>&1 | tee "$out/device.txt"
from omnilake.gpu import get_backend
backend = get_backend("gpu")  # fails clearly when CuPy or the device is missing
import cupy
props = cupy.cuda.runtime.getDeviceProperties(0)
print("backend", backend.name, "device", props["name"].decode(),
      "memory GiB", round(props["totalGlobalMem"] / 2**30, 1), "cupy", cupy.__version__)
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "no usable GPU: stopping" | tee -a "$out/device.txt"; exit 1; }

# The kernel and encoder tests parametrize over every backend present, CuPy included; the
# vector search tests run the engine on its default device (auto: the GPU) where the SQL
# engine's dependencies import too.
tests=(tests/test_kernels.py tests/test_encoder.py)
python3 -c "import datafusion, pyiceberg, sqlglot, faiss" 2>/dev/null && tests+=(
    tests/test_vector.py tests/test_vector_rows.py tests/test_vector_index.py
    tests/test_search_result.py tests/test_embeddings.py)
python3 -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$out/tests.txt"

# The reference encoder runs on the same GPU through PyTorch when it can.
reference=cpu
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    && reference=cuda
# Encoder sentences/s and top-k queries/s on 1M vectors, GPU, then CPU for the ratio.
python3 bench/encoder_bench.py --device gpu --reference-device "$reference" --sentences 20000 \
    --batch-sizes 128,512 --base 1000000 --out "$out/gpu.md" 2>&1 | tee "$out/gpu.log"
python3 bench/encoder_bench.py --device cpu --sentences 2000 --batch-sizes 32,128 \
    --base 1000000 --out "$out/cpu.md" 2>&1 | tee "$out/cpu.log"
