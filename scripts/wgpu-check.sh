#!/usr/bin/env bash
# foil on wgpu: the parity tests of the networks (ADM, ResNet, DenseNet, DiME's classifier, CLIP,
# the Kandinsky UNet and MoVQ, VGG-19), LPIPS, the schedules' steps, the EF-DDPM round trip and
# the three guided samplers' steps against the authors' code, instantiated for burn's `Wgpu`
# backend with the same fixtures and tolerances as on the CPU backends. Runs on the adapter wgpu
# picks: a GPU, or lavapipe (Mesa's Vulkan on the CPU: `apt-get install mesa-vulkan-drivers`),
# which is enough for correctness. Not part of CI (the cold build of wgpu alone takes longer than
# CI's budget allows); results are recorded in docs/backends.md.
#
# Usage: scripts/wgpu-check.sh [extra cargo test filter arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/gpu-tests.bash
gpu_test_args wgpu

echo "== adapter" >&2
if command -v vulkaninfo >/dev/null; then
  vulkaninfo --summary 2>/dev/null | grep -E "deviceName|driverName|apiVersion" >&2 || true
else
  echo "vulkaninfo not found (apt-get install vulkan-tools to see the adapter)" >&2
fi

echo "== build ($(date -u +%H:%M:%S) UTC)" >&2
cargo test "${packages[@]}" --features "$feature_list" --no-run
echo "== parity tests on wgpu ($(date -u +%H:%M:%S) UTC)" >&2
# Every wgpu test has "wgpu" in its name; the CPU tests of these crates are skipped.
cargo test "${packages[@]}" --features "$feature_list" --no-fail-fast -- wgpu "$@"
echo "== done ($(date -u +%H:%M:%S) UTC)" >&2
