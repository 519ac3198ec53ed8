# Sourced by scripts/gpu-check.sh, gpu-pack.sh and wgpu-check.sh: the crates whose parity tests
# are instantiated for the GPU backends (their test-only features `test-wgpu`, `test-cuda`;
# each such test has the backend in its name), and those tests' targets.
GPU_TEST_CRATES=(foil-models foil-metrics foil-schedule foil-invert foil-guide)
GPU_TEST_TARGETS=(models metrics schedule roundtrip guide)

# `gpu_test_args BACKEND` sets `packages` (`-p` and each crate) and `feature_list` (each crate's
# `test-BACKEND`, comma-separated) for `cargo test`.
gpu_test_args() {
  local c features=()
  packages=()
  for c in "${GPU_TEST_CRATES[@]}"; do
    packages+=(-p "$c")
    features+=("$c/test-$1")
  done
  feature_list=$(IFS=,; echo "${features[*]}")
}
