#!/usr/bin/env bash
# foil on an NVIDIA GPU, in one run: (1) the CUDA build; (2) the parity tests of the networks,
# LPIPS, the schedules' steps, the EF-DDPM round trip and the three guided samplers' steps
# against the authors' code, instantiated for burn's `Cuda` backend (same fixtures, same
# tolerances as on the CPU); (3) the benchmark table of scripts/bench.sh against PyTorch CUDA,
# float32 (foil computes in float32; PyTorch with TF32 off); (4) MaskDiME at DiME's CelebA-128
# settings, two images the whole way, per-image time (the issue's goal: 0.3 s per image on an
# H100/H200), on full-size random-weight files.
# Nothing in CI depends on it; run it whenever a machine with a GPU is available and record
# the output in docs/performance.md (date, machine, commit).
#
# Usage: scripts/gpu-check.sh [--skip-tests] [--skip-bench] [--skip-maskdime]
#   The PyTorch column needs tools/.venv with a CUDA torch (tools/requirements.txt); without
#   one, foil's column is timed alone. Step (4) needs the files of `tools/write_dime_full.py
#   DIR` (also from the venv): set DIME_FULL=DIR to reuse files written elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

run_tests=1 run_bench=1 run_maskdime=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip-tests) run_tests=0 ;;
    --skip-bench) run_bench=0 ;;
    --skip-maskdime) run_maskdime=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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
torch_cuda=0
if [[ -x $PY ]] && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch_cuda=1
fi

step "build (--features cuda)"
cargo build --release --features cuda --example maskdime_step

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
  # Every CUDA test has "cuda" in its name; the CPU tests of these crates are skipped.
  cargo test "${packages[@]}" --features "$feature_list" --no-fail-fast -- cuda
fi

if [[ $run_bench == 1 ]]; then
  step "benchmarks: foil Cuda against PyTorch CUDA, float32"
  if [[ $torch_cuda == 1 ]]; then
    scripts/bench.sh --device cuda
  else
    echo "no CUDA torch in tools/.venv: foil's column only" >&2
    scripts/bench.sh --device cuda --skip-torch
  fi
fi

if [[ $run_maskdime == 1 ]]; then
  step "MaskDiME, DiME's CelebA-128 settings, two images, Cuda"
  dir=${DIME_FULL:-target/dime-full}
  if [[ ! -f $dir/ddpm-celeba.pt ]]; then
    if [[ -x $PY ]]; then
      "$PY" tools/write_dime_full.py "$dir"
    else
      echo "no tools/.venv to write the full-size files and DIME_FULL unset: skipped" >&2
      exit 0
    fi
  fi
  target/release/examples/maskdime_step "$dir/ddpm-celeba.pt" "$dir/classifier.pth" \
    "$dir/vgg19.pth" image cuda
fi
step "done"
