#!/usr/bin/env bash
# GPU run of issue 18: the `gpu` tests, finetune on the demo, CUDA serving fp32/fp16 vs raw ORT.
#
#   bench/gpu.sh --dry-run   here, on the CPU: the same tests and bench_gpu.py on a tiny model
#   bench/gpu.sh pack        here (PyPI reachable): wheels for the GPU box, in 48 MiB parts
#   bench/gpu.sh run         on the GPU box (no network): install the parts, run everything
#
# The GPU box (/work/.library/device: one H200, Python 3.12 at `python3` with torch cu130 and
# the CUDA 13 libraries, no network) lacks onnxruntime-gpu, BentoML, the backbone and the demo
# data. `pack` downloads them as wheels for CPython 3.12 manylinux x86-64 (onnxruntime-gpu
# 1.31.1 is built for CUDA 13, which matches the box's torch) and splits them into parts under
# .whl/ (git-ignored), because one device call carries at most 64 MiB: send the parts in
# consecutive calls (`carry: [".whl/part-00"]`, then part-01, ...; each command just
# `ls .whl`), within the machine's 30 s warm window, so they pile up on the warm machine; then
# `bench/gpu.sh run` with the last part carried. See bench/README.md, "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
PY=${PYTHON:-python3}
SITE=${SLICEWISE_GPU_SITE:-/tmp/slicewise-site}
ORT_GPU=onnxruntime-gpu==1.31.1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# what the box's image already has (KINDS.md, 2026-11-17) of what constraints.txt pins; the
# box's versions are used for these (its torch is the CUDA build)
BOX_HAS="absl-py aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi 
  charset-normalizer click cloudpickle contourpy cycler filelock flatbuffers fonttools 
  formulaic frozenlist fsspec grpcio h11 hf-xet httpcore httpx huggingface-hub hypothesis idna 
  iniconfig interface-meta jinja2 joblib kiwisolver markdown markdown-it-py markupsafe 
  matplotlib mdurl ml-dtypes mpmath multidict mypy-extensions narwhals networkx numpy 
  nvidia-ml-py onnx onnx-ir onnxruntime onnxscript packaging pandas pathspec patsy pillow 
  pluggy prometheus-client propcache protobuf psutil pyarrow pygments pyparsing pytest 
  pytest-timeout python-dateutil pyyaml regex requests rich safetensors scikit-learn scipy 
  sentence-transformers shellingham sortedcontainers statsmodels sympy tensorboard 
  tensorboard-data-server threadpoolctl tokenizers torch tqdm transformers typer 
  typing-extensions typing-inspect urllib3 uvloop werkzeug wrapt yarl"
DEV_ONLY="ruff mypy librt ast-serialize kubernetes-validate types-pyyaml snorkel munkres"

box_missing() {  # constraints.txt pins to carry: neither on the box nor dev-only
  $PY - "$BOX_HAS $DEV_ONLY" <<'PYEOF'
import re, sys
skip = {n.lower().replace("_", "-") for n in sys.argv[1].split()}
for line in open("constraints.txt"):
    m = re.match(r"^([A-Za-z0-9_.-]+)==", line)
    if m and m.group(1).lower().replace("_", "-") not in skip:
        print(line.strip())
PYEOF
}

pack() {
  rm -rf .whl && mkdir -p .whl/wheels
  # shellcheck disable=SC2046
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl/wheels "$ORT_GPU" $(box_missing)
  if command -v redis-server >/dev/null; then  # the box has no redis-server; try this one
    mkdir -p .whl/wheels/bin && cp "$(command -v redis-server)" .whl/wheels/bin/
    for lib in liblzf.so.1 libjemalloc.so.2; do
      p=$(ldconfig -p | awk -v l="$lib" '$1==l {print $NF; exit}'); [ -n "$p" ] && cp "$p" .whl/wheels/bin/
    done
  fi
  tar -C .whl -cf - wheels | split -b 48m -d - .whl/part-
  rm -rf .whl/wheels
  ls -la .whl
  echo "send each .whl/part-NN in its own device call (carry), back to back, then run bench/gpu.sh run"
}

install() {
  if ! ls .whl/part-* >/dev/null 2>&1; then
    echo "no .whl/part-* here: run 'bench/gpu.sh pack' on a machine with PyPI, send the parts" >&2
    exit 2
  fi
  mkdir -p /tmp/slicewise-wheels && cat .whl/part-* | tar -C /tmp/slicewise-wheels -xf -
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" /tmp/slicewise-wheels/wheels/*.whl
  if [ -x /tmp/slicewise-wheels/wheels/bin/redis-server ]; then
    export PATH=/tmp/slicewise-wheels/wheels/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/slicewise-wheels/wheels/bin:${LD_LIBRARY_PATH:-}
    redis-server --version || echo "the carried redis-server does not run here; tests needing Redis skip"
  fi
  # the CUDA 13 libraries of the box's torch, for onnxruntime-gpu's CUDA provider
  local nv
  nv=$($PY -c 'import glob,os,site; print(":".join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/lib*.so*", recursive=True)})))')
  export LD_LIBRARY_PATH=$nv:${LD_LIBRARY_PATH:-}
}

results() {  # copy the results where the device tool brings files back
  if [ -n "${OUT:-}" ]; then cp bench/results/gpu* "$OUT"/ 2>/dev/null || true; fi
}

case "$MODE" in
  pack) pack ;;
  --dry-run|dry-run)
    PY=${PYTHON:-.venv/bin/python}
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    $PY -m pytest -q -rs tests/gpu
    $PY bench/bench_gpu.py --dry-run --epochs 1
    results ;;
  run)
    install
    export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH} BENTOML_HOME=/tmp/slicewise-bentoml
    $PY -c 'import onnxruntime as o, torch; print(torch.__version__, torch.cuda.get_device_name(0), o.__version__, o.get_available_providers())'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    set +e
    $PY -m pytest -q -rs -m gpu tests/gpu 2>&1 | tee bench/results/gpu-tests.txt
    set -e
    $PY bench/bench_gpu.py "${@:2}"
    results ;;
  *) echo "usage: bench/gpu.sh [pack|run|--dry-run] [bench_gpu.py options]" >&2; exit 2 ;;
esac
