#!/usr/bin/env bash
# Build, on a machine without a GPU, everything scripts/gpu-check.sh runs on one, for a GPU
# machine that has no Rust toolchain and reaches no registry (this project's lent H200s: a CUDA
# image with PyTorch, nothing to download). burn-cuda loads libcuda and NVRTC at run time, so
# the CUDA build needs no CUDA here.
#
# Usage: scripts/gpu-pack.sh [DIR]     (default .gpu, which .gitignore ignores)
#   DIR/bin.tar.xz the release binaries, stripped, in one archive: maskdime_step (the example),
#                  networks (the bench) and the five crates' test binaries that hold the CUDA
#                  parity tests (models, metrics, schedule, roundtrip, guide; `--features
#                  <crate>/test-cuda`). About 40 MB each but mostly the same code (burn, cubecl):
#                  xz with a dictionary larger than all of them stores that code about once.
#   DIR/wheels/    the PyTorch side's packages the GPU image lacks (diffusers, lpips,
#                  guided-diffusion-sdk), pure-Python wheels
#   DIR/root       the workspace path the test binaries were built in: they read their fixtures
#                  from it (`env!("CARGO_MANIFEST_DIR")`), so gpu-check links it to its checkout
#   DIR/commit     the commit they were built from (a `+` if the tree had changes)
#   DIR/files      the checksums of the checkout's files (`sha1sum`), for gpu-check to compare
#                  a copy without .git with the checkout the binaries were built in
# Then, on the GPU machine, in a checkout of the same commit with DIR beside it:
#   scripts/gpu-check.sh --prebuilt DIR
# CUDARC_CUDA_VERSION (default 13000: the lent image's CUDA 13.0) picks the CUDA API the
# bindings are built for; the driver must support it.
# Everything in DIR plus the checkout travels to the GPU machine: the script prints the sum.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.gpu}
case "$dir" in -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;; esac
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
PY=tools/.venv/bin/python
[[ -x $PY ]] || PY=python3
step() { printf '\n=== %s (%s UTC)\n' "$1" "$(date -u +%H:%M:%S)" >&2; }

source scripts/gpu-tests.bash
gpu_test_args cuda
tests=()
for t in "${GPU_TEST_TARGETS[@]}"; do tests+=(--test "$t"); done

# The executables cargo built, one path per line, from its JSON messages on stdin.
executables() {
  "$PY" -c 'import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable"):
            print(m["executable"])'
}

stage=target/gpu-pack
# DIR is replaced: refuse a folder that is not an earlier pack (marked at once, so that a
# pack that failed half way is still one).
if [[ -e $dir && ! -f $dir/.gpu-pack && ! -f $dir/commit && -n $(ls -A "$dir" 2>/dev/null) ]]; then
  echo "$dir exists and is not an earlier pack (no $dir/.gpu-pack): choose another folder" >&2
  exit 2
fi
rm -rf "$dir" "$stage"
mkdir -p "$dir/wheels" "$stage/bin"
echo "written by scripts/gpu-pack.sh; replaced by its next run" >"$dir/.gpu-pack"
list=$(mktemp)
step "build: the example and the bench, --features cuda (CUDA $CUDARC_CUDA_VERSION)"
cargo build --release --features cuda --example maskdime_step --message-format=json-render-diagnostics | executables >>"$list"
cargo bench --bench networks --features cuda --no-run --message-format=json-render-diagnostics | executables >>"$list"
step "build: the CUDA parity tests"
cargo test --release --no-run "${packages[@]}" --features "$feature_list" "${tests[@]}" \
  --message-format=json-render-diagnostics | executables >>"$list"

# Test and bench binaries are named <target>-<hash>; keep <target>.
while read -r exe; do
  name=$(basename "$exe")
  name=${name%-*}
  [[ $name == maskdime_step || " networks ${GPU_TEST_TARGETS[*]} " == *" $name "* ]] || continue
  cp "$exe" "$stage/bin/$name"
  strip "$stage/bin/$name"
done <"$list"
rm -f "$list"
for want in maskdime_step networks "${GPU_TEST_TARGETS[@]}"; do
  [[ -x $stage/bin/$want ]] || { echo "no $want among the built binaries" >&2; exit 1; }
done
step "archive"
ls -l "$stage/bin" >&2
tar -C "$stage" -cf - bin | xz -9 --lzma2=preset=9,dict=512MiB -T1 >"$dir/bin.tar.xz"

step "wheels for the GPU image's python3 (3.12)"
# The versions tools/requirements.txt pins (the fixtures' and the CPU table's).
pin() { grep -E "^$1==" tools/requirements.txt || { echo "$1 is not pinned in tools/requirements.txt" >&2; exit 1; }; }
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 -d "$dir/wheels" "$(pin diffusers)" "$(pin lpips)"
# guided-diffusion-sdk is published as source only: a pure-Python wheel is built from it here.
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$dir/wheels" "$(pin guided-diffusion-sdk)"

pwd -P >"$dir/root"
commit=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain --untracked-files=no) ]] || commit="$commit+"
echo "$commit" >"$dir/commit"
git ls-files -z | xargs -0 sha1sum >"$dir/files"

step "what travels"
ls -l "$dir" "$dir/wheels" >&2
# What travels: tracked files and untracked ones git does not ignore.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
pack_bytes=$(du -cb "$dir" | tail -1 | cut -f1)
total=$((tree_bytes + pack_bytes))
printf 'checkout %d MiB + %s %d MiB = %d MiB (the device takes at most 64 MiB)\n' \
  $((tree_bytes >> 20)) "$dir" $((pack_bytes >> 20)) $((total >> 20)) >&2
(( total < 64 << 20 )) || { echo "too much to travel" >&2; exit 1; }
