#!/usr/bin/env bash
# foil on an NVIDIA GPU, in one run: (1) the CUDA build (or, with --prebuilt, the binaries
# scripts/gpu-pack.sh built elsewhere), then a smoke test (the tiny MaskDiME twins' step on
# Cuda: libcuda, NVRTC and the toolkit's headers found, in seconds); (2) MaskDiME at DiME's
# CelebA-128 settings, two images the whole way after a warm-up pass over them, per-image time
# (the issue's goal: 0.3 s per image on an H100/H200) from a free-running pass and the network
# calls' share from a pass that waits for the device around each call, then each network call
# timed alone, on full-size random-weight files; (3) the parity tests of the networks, LPIPS,
# the schedules' steps, the EF-DDPM round trip and the three guided samplers' steps against the
# authors' code, instantiated for burn's `Cuda` backend (same fixtures, same tolerances as on
# the CPU); (4) the benchmark table of scripts/bench.sh against PyTorch CUDA, float32 (foil
# computes in float32; PyTorch with TF32 off). The goal's measurement comes first, so that a
# lease cut short still returns it; each step has a time limit, and a failed or timed-out step
# is named at the end without stopping the ones after it.
# Nothing in CI depends on it; run it whenever a machine with a GPU is available and record
# the output in docs/performance.md (date, machine, commit).
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR] [--skip-tests] [--skip-bench] [--skip-maskdime]
#   The PyTorch column needs tools/.venv with a CUDA torch (tools/requirements.txt); without
#   one, foil's column is timed alone. Step (2) needs the files of `tools/write_dime_full.py
#   DIR` (also from the venv): set DIME_FULL=DIR to reuse files written elsewhere.
#   --prebuilt DIR  for a GPU machine without Rust or registries (this project's lent H200s):
#     run the binaries scripts/gpu-pack.sh built elsewhere into DIR instead of building
#     (unpacked into /tmp/foil-gpu, so that DIR stays small enough to travel), and the
#     machine's own python3 (its PyTorch) with DIR/wheels installed beside it for the PyTorch
#     side and the full-size files (written with --without-authors where the DiME mirror is
#     absent). The device tool's call, from this checkout with DIR=.gpu:
#       scripts/gpu-pack.sh                       # here, about 45 min cold on 2 cores
#       run(command="set -o pipefail; GPU_CHECK_BUDGET=510 scripts/gpu-check.sh --prebuilt .gpu 2>&1 | tee $OUT/gpu-check.log",
#           carry=[".gpu"], timeout_s=540)
#   GPU_CHECK_BUDGET=S  end within about S seconds: each step's limit is cut to what is left, and
#     a step with under 20 s left is named among the failures unrun, so the summary always
#     prints (the step limits alone add up to half an hour).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
budget=${GPU_CHECK_BUDGET:-0}
[[ $budget =~ ^[0-9]+$ ]] || { echo "GPU_CHECK_BUDGET expects seconds, found $budget" >&2; exit 2; }

run_tests=1 run_bench=1 run_maskdime=1 prebuilt=""
failed=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --skip-tests) run_tests=0 ;;
    --skip-bench) run_bench=0 ;;
    --skip-maskdime) run_maskdime=0 ;;
    --prebuilt)
      [[ $# -ge 2 ]] || { echo "--prebuilt expects the folder of scripts/gpu-pack.sh" >&2; exit 2; }
      prebuilt="$2"; shift ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
step() { printf '\n=== %s (%s UTC)\n' "$1" "$(date -u +%H:%M:%S)" >&2; }
# `limited SECONDS NAME COMMAND...`: runs COMMAND, naming NAME among the failures if it fails
# or outlasts SECONDS (or what is left of GPU_CHECK_BUDGET, if less).
limited() {
  local seconds=$1 name=$2 rc=0
  shift 2
  if [[ $budget != 0 ]]; then
    local left=$((budget - SECONDS - 15))
    if ((left < 20)); then
      echo "$name: not run, the budget is spent" >&2
      failed+=("$name (no time left)")
      return 0
    fi
    ((seconds <= left)) || seconds=$left
  fi
  timeout --kill-after=10 "$seconds" "$@" || rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "$name: stopped after $seconds s" >&2
    failed+=("$name (timed out)")
  elif [[ $rc != 0 ]]; then
    failed+=("$name")
  fi
  return 0
}

step "machine"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >&2; then
  echo "no NVIDIA GPU here (nvidia-smi failed): nothing to check" >&2
  exit 2
fi
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) CPU cores" >&2

# With --prebuilt: checks the pack against this checkout, unpacks its binaries behind wrappers
# that give them NVRTC, links their fixtures, installs the wheels; sets `bin` and `PY`.
use_prebuilt() {
  local f root loader nvrtc b changed
  # The Rust binaries' library path: the CUDA toolkit's NVRTC where the loader lacks it. Only
  # they get it, so that PyTorch keeps the CUDA libraries of its own wheels.
  local rust_libs=${LD_LIBRARY_PATH:-}
  for f in root commit files bin.tar.xz; do
    [[ -e $prebuilt/$f ]] || { echo "$prebuilt/$f is missing: run scripts/gpu-pack.sh $prebuilt" >&2; exit 2; }
  done
  step "prebuilt binaries: $prebuilt (built from $(cat "$prebuilt/commit"))"
  # Without .git here, the checkout is compared with the one the binaries were built in file
  # by file (their fixtures, the scripts).
  if changed=$(sha1sum --check --quiet "$prebuilt/files" 2>&1); then
    echo "this checkout's tracked files are the pack's" >&2
  else
    echo "WARNING: this checkout differs from the pack's:" >&2
    head -20 <<<"$changed" >&2
  fi
  # Python's tarfile reads xz whatever the machine's tools (the dictionary is 512 MiB).
  bin=/tmp/foil-gpu/bin
  rm -rf /tmp/foil-gpu
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
    "$prebuilt/bin.tar.xz" /tmp/foil-gpu
  # The test binaries read their fixtures under the path they were built in.
  root=$(cat "$prebuilt/root")
  if [[ -L $root || ! -e $root ]]; then
    mkdir -p "$(dirname "$root")"
    ln -sfn "$PWD" "$root"
    echo "linked $root to this checkout (the test binaries' fixtures)" >&2
  elif [[ ! $root/Cargo.toml -ef Cargo.toml ]]; then
    echo "WARNING: $root is another folder: the test binaries read their fixtures there" >&2
  fi
  # burn-cuda compiles its kernels at run time with NVRTC against the toolkit's headers: it
  # looks in CUDA_PATH, else /usr/local/cuda, /opt/cuda or /usr.
  if [[ -z ${CUDA_PATH:-} && ! -e /usr/local/cuda && ! -e /opt/cuda ]] && command -v nvcc >/dev/null; then
    CUDA_PATH=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    export CUDA_PATH
  fi
  echo "CUDA toolkit: ${CUDA_PATH:-/usr/local/cuda}; nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')" >&2
  loader=$(ldconfig -p 2>/dev/null || true)
  echo "the loader's CUDA libraries:" >&2
  grep -E 'libcuda\.so|libnvrtc\.so' <<<"$loader" >&2 || echo "  (none)" >&2
  # cudarc (built for CUDA 13.0 by gpu-pack) loads libcuda.so.1 and libnvrtc.so(.13); never
  # the toolkit's stubs, which would load and then fail every call.
  if ! grep -q 'libnvrtc\.so\.13 ' <<<"$loader"; then
    nvrtc=$(find ${CUDA_PATH:-} /usr/local/cuda*/ /opt -name 'libnvrtc.so.13*' -not -path '*/stubs/*' 2>/dev/null | head -1 || true)
    if [[ -n $nvrtc ]]; then
      rust_libs="$(dirname "$nvrtc")${rust_libs:+:$rust_libs}"
      echo "NVRTC for the Rust binaries: $nvrtc" >&2
    else
      echo "no libnvrtc.so.13 found: the CUDA steps will fail" >&2
    fi
  fi
  # The Rust binaries, with their library path.
  mkdir -p /tmp/foil-gpu/run
  for b in "$bin"/*; do
    printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$rust_libs" "$b" \
      >"/tmp/foil-gpu/run/$(basename "$b")"
    chmod +x "/tmp/foil-gpu/run/$(basename "$b")"
  done
  bin=/tmp/foil-gpu/run
  PY=python3
  if compgen -G "$prebuilt/wheels/*.whl" >/dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/foil-site "$prebuilt"/wheels/*.whl; then
      export PYTHONPATH=/tmp/foil-site${PYTHONPATH:+:$PYTHONPATH}
    else
      failed+=(wheels)
    fi
  fi
  export FOIL_PYTHON=$PY FOIL_BENCH_BIN=$bin/networks
}

PY=tools/.venv/bin/python
if [[ -n $prebuilt ]]; then
  use_prebuilt
fi
torch_cuda=0
if command -v "$PY" >/dev/null && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch_cuda=1
fi

if [[ -z $prebuilt ]]; then
  step "build (--features cuda)"
  cargo build --release --features cuda --example maskdime_step
  bin=target/release/examples
fi

step "smoke test: the tiny MaskDiME twins' step on Cuda"
tiny=crates/foil-models/tests/fixtures
# `limited` returns 0 and records a failure in `failed`: the smoke test failed if that grew.
smoke_failed=${#failed[@]}
limited 120 smoke "$bin/maskdime_step" "$tiny/adm_tiny.safetensors" \
  "$tiny/dime_classifier_tiny.pth" "$tiny/vgg19_tiny.pth" step cuda
if [[ ${#failed[@]} != "$smoke_failed" ]]; then
  echo "FAILED: ${failed[*]}; after the smoke test nothing else can run on Cuda. The environment:" >&2
  env | grep -E '^(CUDA|LD_LIBRARY_PATH|PATH)' >&2 || true
  ls -d /usr/local/cuda* /opt/cuda 2>/dev/null >&2 || true
  exit 1
fi

if [[ $run_maskdime == 1 ]]; then
  step "MaskDiME, DiME's CelebA-128 settings, two images after a warm-up pass, Cuda"
  dir=${DIME_FULL:-target/dime-full}
  if [[ ! -f $dir/vgg19.pth ]]; then
    if command -v "$PY" >/dev/null; then
      authors=()
      git --git-dir "${DIME_REPO:-/work/.mirror/guillaumejs2403+DiME/repo}" rev-parse -q HEAD >/dev/null 2>&1 \
        || authors=(--without-authors)
      limited 120 write_dime_full "$PY" tools/write_dime_full.py "$dir" ${authors[@]+"${authors[@]}"}
    else
      echo "no $PY to write the full-size files and DIME_FULL unset: skipped" >&2
    fi
  fi
  if [[ -f $dir/vgg19.pth ]]; then
    limited 240 maskdime "$bin/maskdime_step" "$dir/ddpm-celeba.pt" "$dir/classifier.pth" \
      "$dir/vgg19.pth" image cuda warm
    # The free-running pass above gives the goal's per-image time; its accounted pass waits for
    # the device around every network call (profile::sync_with), so its split holds the
    # kernels. `step` times each network call and two guided steps alone, to set beside it.
    step "MaskDiME's calls one by one, Cuda"
    limited 120 maskdime-step "$bin/maskdime_step" "$dir/ddpm-celeba.pt" "$dir/classifier.pth" \
      "$dir/vgg19.pth" step cuda
  fi
fi

if [[ $run_tests == 1 ]]; then
  source scripts/gpu-tests.bash
  step "parity tests on CUDA"
  # The tests check values, not speed: cubecl's minimal autotuning (its default kernel of each
  # kind, without timing the others) spares minutes of tuning each test process's shapes.
  autotune=(env "CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}")
  # Every CUDA test has "cuda" in its name; the CPU tests of these crates are skipped.
  if [[ -n $prebuilt ]]; then
    for t in "${GPU_TEST_TARGETS[@]}"; do
      echo "--- $t" >&2
      limited 180 "$t" "${autotune[@]}" "$bin/$t" cuda
    done
  else
    gpu_test_args cuda
    limited 3600 tests "${autotune[@]}" cargo test "${packages[@]}" --features "$feature_list" \
      --no-fail-fast -- cuda
  fi
fi

if [[ $run_bench == 1 ]]; then
  step "benchmarks: foil Cuda against PyTorch CUDA, float32"
  # Without --prebuilt, bench.sh builds the bench first.
  limit=$([[ -n $prebuilt ]] && echo 300 || echo 3600)
  if [[ $torch_cuda == 1 ]]; then
    limited "$limit" bench scripts/bench.sh --device cuda
  else
    echo "no CUDA torch in $PY: foil's column only" >&2
    limited "$limit" bench scripts/bench.sh --device cuda --skip-torch
  fi
fi
step "done"
[[ ${#failed[@]} == 0 ]] || { echo "FAILED: ${failed[*]}" >&2; exit 1; }
