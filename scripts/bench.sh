#!/usr/bin/env bash
# foil against PyTorch, side by side: the networks of benches/networks.rs (criterion, foil's two CPU
# backends) and tools/bench_torch.py (the reference implementations at the same configurations and
# batches), then one markdown table (docs/performance.md).
#
# Usage: scripts/bench.sh [--quick] [--threads N] [--only a,b] [--skip-torch] [--skip-foil] [--device D]
#   --quick       the three fast networks (resnet18_grad, clip_b32, lpips_alex): about 1 min 15 s
#                 against 8.5 min for all eight on 2 cores
#   --threads N   threads on both sides (default: nproc): torch.set_num_threads(N), and
#                 RAYON_NUM_THREADS / MATMUL_NUM_THREADS for foil
#   --only a,b    these networks (names as in the table)
#   --skip-torch / --skip-foil   reuse the other side's last results (target/bench/)
#   --device D    cpu (default: PyTorch CPU against foil's flex and ndarray) or cuda (PyTorch CUDA
#                 against foil's Cuda backend, built with `--features cuda`; scripts/gpu-check.sh)
# Results: target/bench/torch.jsonl (torch-cuda.jsonl), criterion's
# <target>/criterion/<network>/<backend>/new/estimates.json, and the table in target/bench/table.md
# (table-cuda.md). Idempotent: every run times again and rewrites them.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(adm_forward densenet121_grad resnet18_grad resnet18_grad_tracked kandinsky_unet_step movq_decode clip_b32 lpips_alex)
QUICK=(resnet18_grad clip_b32 lpips_alex)
threads=$(nproc)
networks=("${ALL[@]}")
run_torch=1
run_foil=1
device=cpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) networks=("${QUICK[@]}") ;;
    --threads) threads="$2"; shift ;;
    --only) IFS=, read -r -a networks <<<"$2"; shift ;;
    --skip-torch) run_torch=0 ;;
    --skip-foil) run_foil=0 ;;
    --device) device="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$device" in
  cpu) backends=(flex ndarray); features=(); suffix="" ;;
  cuda) backends=(cuda); features=(--features cuda); suffix="-cuda" ;;
  *) echo "unknown device $device; expected cpu or cuda" >&2; exit 2 ;;
esac
for n in "${networks[@]}"; do
  [[ " ${ALL[*]} " == *" $n "* ]] || { echo "unknown network $n; expected some of: ${ALL[*]}" >&2; exit 2; }
done

PY=tools/.venv/bin/python
OUT=target/bench
# Where criterion writes (it follows CARGO_TARGET_DIR).
CRIT="${CARGO_TARGET_DIR:-target}/criterion"
mkdir -p "$OUT"
only=$(IFS=,; echo "${networks[*]}")
# criterion's filter is a regex over "<network>/<backend>".
filter="^($(IFS='|'; echo "${networks[*]}"))/($(IFS='|'; echo "${backends[*]}"))\$"
TORCH_OUT="$OUT/torch$suffix.jsonl"

if [[ $run_torch == 1 ]]; then
  echo "== PyTorch ($device, $threads threads): $only" >&2
  "$PY" tools/bench_torch.py --threads "$threads" --device "$device" --only "$only" \
    | tee "$TORCH_OUT.tmp" >&2
  mv "$TORCH_OUT.tmp" "$TORCH_OUT"
fi

if [[ $run_foil == 1 ]]; then
  echo "== foil ($threads threads): building" >&2
  cargo bench --bench networks ${features[@]+"${features[@]}"} --no-run >&2
  # Stale estimates must not pass for this run's: drop the selected networks' results first.
  for n in "${networks[@]}"; do
    for b in "${backends[@]}"; do rm -rf "${CRIT:?}/$n/$b"; done
  done
  echo "== foil: running $filter" >&2
  RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads \
    cargo bench --bench networks ${features[@]+"${features[@]}"} -- --noplot "$filter" >&2
fi

# The table: median seconds, and foil's time as a multiple of PyTorch's.
"$PY" - "$TORCH_OUT" "$only" "$CRIT" "$device" "${backends[*]}" <<'EOF' | tee "$OUT/table$suffix.md"
import json, pathlib, sys

torch_lines = {}
path = pathlib.Path(sys.argv[1])
if path.exists():
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            torch_lines[d["name"]] = d["seconds"]

def foil(name, backend):
    p = pathlib.Path(sys.argv[3]) / name / backend / "new/estimates.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())["median"]["point_estimate"] / 1e9

def secs(s):
    return f"{s:#.3g}"  # three significant digits, trailing zeros kept: 6.00, 0.0870

def cell(s, ref):
    if s is None:
        return "n/a"
    return f"{secs(s)} ({s / ref:.1f}x)" if ref else secs(s)

device, backends = sys.argv[4], sys.argv[5].split()
print(f"| network | PyTorch {device} s |" + "".join(f" foil {b} s (x PyTorch) |" for b in backends))
print("|---|---|" + "---|" * len(backends))
for name in sys.argv[2].split(","):
    ref = torch_lines.get(name)
    torch_cell = secs(ref) if ref is not None else "n/a"
    print(f"| {name} | {torch_cell} |" + "".join(f" {cell(foil(name, b), ref)} |" for b in backends))
EOF
