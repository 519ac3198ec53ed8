#!/usr/bin/env bash
# foil on an NVIDIA GPU, in one run: (1) the CUDA build (or, with --prebuilt, the binaries
# scripts/gpu-pack.sh built elsewhere); (2) MaskDiME at DiME's CelebA-128 settings, two images
# the whole way, per-image time (the issue's goal: 0.3 s per image on an H100/H200), on
# full-size random-weight files; (3) the parity tests of the networks, LPIPS, the schedules'
# steps, the EF-DDPM round trip and the three guided samplers' steps against the authors' code,
# instantiated for burn's `Cuda` backend (same fixtures, same tolerances as on the CPU); (4) the
# benchmark table of scripts/bench.sh against PyTorch CUDA, float32 (foil computes in float32;
# PyTorch with TF32 off). The goal's measurement comes first, so that a lease cut short still
# returns it.
# Nothing in CI depends on it; run it whenever a machine with a GPU is available and record
# the output in docs/performance.md (date, machine, commit).
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR] [--skip-tests] [--skip-bench] [--skip-maskdime]
#   The PyTorch column needs tools/.venv with a CUDA torch (tools/requirements.txt); without
#   one, foil's column is timed alone. Step (2) needs the files of `tools/write_dime_full.py
#   DIR` (also from the venv): set DIME_FULL=DIR to reuse files written elsewhere.
#   --prebuilt DIR  for a GPU machine without Rust or registries (this project's lent H200s):
#     run the binaries scripts/gpu-pack.sh built elsewhere into DIR instead of building, and
#     the machine's own python3 (its PyTorch) with DIR/wheels installed beside it for the
#     PyTorch side and the full-size files (written with --without-authors where the DiME
#     mirror is absent). The device tool's call, from this checkout with DIR=.gpu:
#       scripts/gpu-pack.sh                       # here, about 40 min cold on 2 cores
#       run(command="scripts/gpu-check.sh --prebuilt .gpu 2>&1 | tee $OUT/gpu-check.log",
#           carry=[".gpu"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."

run_tests=1 run_bench=1 run_maskdime=1 prebuilt=""
failed=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip-tests) run_tests=0 ;;
    --skip-bench) run_bench=0 ;;
    --skip-maskdime) run_maskdime=0 ;;
    --prebuilt) prebuilt="$2"; shift ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
step() { printf '\n=== %s (%s UTC)\n' "$1" "$(date -u +%H:%M:%S)" >&2; }

step "machine"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >&2; then
  echo "no NVIDIA GPU here (nvidia-smi failed): nothing to check" >&2
  exit 2
fi
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPU cores" >&2

PY=tools/.venv/bin/python
if [[ -n $prebuilt ]]; then
  for f in root commit bin.tar.xz; do
    [[ -e $prebuilt/$f ]] || { echo "$prebuilt/$f is missing: run scripts/gpu-pack.sh $prebuilt" >&2; exit 2; }
  done
  step "prebuilt binaries: $prebuilt (built from $(cat "$prebuilt/commit"), this checkout $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  # Python's tarfile reads xz whatever the machine's tools (the dictionary is 512 MiB).
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
    "$prebuilt/bin.tar.xz" "$prebuilt"
  # The test binaries read their fixtures under the path they were built in.
  root=$(cat "$prebuilt/root")
  if [[ ! -e $root ]]; then
    mkdir -p "$(dirname "$root")"
    ln -s "$PWD" "$root"
    echo "linked $root to this checkout (the test binaries' fixtures)" >&2
  fi
  # burn-cuda compiles its kernels at run time with NVRTC against the toolkit's headers: it
  # looks in CUDA_PATH, else /usr/local/cuda, /opt/cuda or /usr.
  if [[ -z ${CUDA_PATH:-} && ! -e /usr/local/cuda && ! -e /opt/cuda ]] && command -v nvcc >/dev/null; then
    export CUDA_PATH=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  fi
  echo "CUDA toolkit: ${CUDA_PATH:-/usr/local/cuda}; nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')" >&2
  nvrtc=$(find ${CUDA_PATH:-} /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt -name 'libnvrtc.so*' 2>/dev/null | head -1 || true)
  if [[ -n $nvrtc ]]; then
    export LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "NVRTC: $nvrtc" >&2
  fi
  PY=python3
  if compgen -G "$prebuilt/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/foil-site "$prebuilt"/wheels/*.whl
    export PYTHONPATH=/tmp/foil-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  export FOIL_PYTHON=$PY FOIL_BENCH_BIN=$prebuilt/bin/networks
fi
torch_cuda=0
if command -v "$PY" >/dev/null && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch_cuda=1
fi

if [[ -z $prebuilt ]]; then
  step "build (--features cuda)"
  cargo build --release --features cuda --example maskdime_step
fi
maskdime_step=${prebuilt:+$prebuilt/bin}
maskdime_step=${maskdime_step:-target/release/examples}/maskdime_step

if [[ $run_maskdime == 1 ]]; then
  step "MaskDiME, DiME's CelebA-128 settings, two images, Cuda"
  dir=${DIME_FULL:-target/dime-full}
  if [[ ! -f $dir/ddpm-celeba.pt ]]; then
    if command -v "$PY" >/dev/null; then
      authors=()
      git --git-dir "${DIME_REPO:-/work/.mirror/guillaumejs2403+DiME/repo}" rev-parse -q HEAD >/dev/null 2>&1 \
        || authors=(--without-authors)
      "$PY" tools/write_dime_full.py "$dir" ${authors[@]+"${authors[@]}"} || failed+=(write_dime_full)
    else
      echo "no tools/.venv to write the full-size files and DIME_FULL unset: skipped" >&2
    fi
  fi
  if [[ -f $dir/vgg19.pth ]]; then
    "$maskdime_step" "$dir/ddpm-celeba.pt" "$dir/classifier.pth" \
      "$dir/vgg19.pth" image cuda || failed+=(maskdime)
    # The per-image time above is the goal's; its split by network is not, on a GPU (the
    # profile's spans time the queueing, not the kernels). `step` times each network call and
    # two guided steps to the finished result, which is the split to read.
    step "MaskDiME's calls one by one, Cuda"
    "$maskdime_step" "$dir/ddpm-celeba.pt" "$dir/classifier.pth" \
      "$dir/vgg19.pth" step cuda || failed+=(maskdime-step)
  fi
fi

if [[ $run_tests == 1 ]]; then
  CRATES=(foil-models foil-metrics foil-schedule foil-invert foil-guide)
  packages=()
  features=()
  for c in "${CRATES[@]}"; do
    packages+=(-p "$c")
    features+=("$c/test-cuda")
  done
  feature_list=$(IFS=,; echo "${features[*]}")
  step "parity tests on CUDA"
  # The tests check values, not speed: cubecl's minimal autotuning (its default kernel of each
  # kind, without timing the others) spares minutes of tuning each test process's shapes.
  autotune=${CUBECL_AUTOTUNE_LEVEL:-minimal}
  # Every CUDA test has "cuda" in its name; the CPU tests of these crates are skipped.
  if [[ -n $prebuilt ]]; then
    for t in models metrics schedule roundtrip guide; do
      echo "--- $t" >&2
      CUBECL_AUTOTUNE_LEVEL=$autotune "$prebuilt/bin/$t" cuda || failed+=("$t")
    done
  else
    CUBECL_AUTOTUNE_LEVEL=$autotune cargo test "${packages[@]}" --features "$feature_list" \
      --no-fail-fast -- cuda || failed+=(tests)
  fi
fi

if [[ $run_bench == 1 ]]; then
  step "benchmarks: foil Cuda against PyTorch CUDA, float32"
  if [[ $torch_cuda == 1 ]]; then
    scripts/bench.sh --device cuda || failed+=(bench)
  else
    echo "no CUDA torch in tools/.venv: foil's column only" >&2
    scripts/bench.sh --device cuda --skip-torch || failed+=(bench)
  fi
fi
step "done"
# A failed step does not stop the later ones (one lease, one run): they are named here.
[[ ${#failed[@]} == 0 ]] || { echo "FAILED: ${failed[*]}" >&2; exit 1; }
