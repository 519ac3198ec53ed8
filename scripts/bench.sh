#!/usr/bin/env bash
# foil against PyTorch, side by side: the networks of benches/networks.rs (criterion, foil's two CPU
# backends) and tools/bench_torch.py (the reference implementations at the same configurations and
# batches), then one markdown table (docs/performance.md).
#
# Usage: scripts/bench.sh [--quick] [--threads N] [--only a,b] [--rounds R] [--backends b,c]
#                         [--skip-torch] [--skip-foil] [--device D]
#   --quick       the three fast networks (resnet18_grad, clip_b32, lpips_alex): about 1 min 15 s
#                 against 8.5 min for all eight on 2 cores
#   --threads N   threads on both sides (default: nproc): torch.set_num_threads(N), and
#                 RAYON_NUM_THREADS / MATMUL_NUM_THREADS for foil
#   --only a,b    these networks (names as in the table)
#   --rounds R    alternate PyTorch and foil R times (default 1) and report the median of each
#                 side and of the per-round ratios, with their range: on a machine whose speed
#                 drifts (a shared VM) the ratio of two neighbouring runs is what holds still
#   --backends b  foil's backends to time (default: flex,ndarray on cpu; cuda on cuda); on cpu
#                 also candle (burn-candle, built with `--features candle`) and tch (burn-tch on
#                 the libtorch of a PyTorch 2.9.0 install: LIBTORCH_PYTHON=<its python>; foil does
#                 not depend on burn-tch, whose build script downloads libtorch when it finds
#                 none, so a throwaway crate in target/tch-bench compiles benches/networks.rs
#                 against it)
#   --skip-torch / --skip-foil   reuse the other side's last results (target/bench/)
#   --device D    cpu (default: PyTorch CPU against foil's flex and ndarray) or cuda (PyTorch CUDA
#                 against foil's Cuda backend, built with `--features cuda`; scripts/gpu-check.sh)
# Environment: FOIL_BENCH_BIN=<bench binary> times that binary (built elsewhere:
#   scripts/gpu-pack.sh) instead of building one; FOIL_PYTHON=<python> runs PyTorch there
#   instead of tools/.venv's (a GPU machine's own PyTorch: scripts/gpu-check.sh --prebuilt).
# Results: target/bench/torch.jsonl (torch-cuda.jsonl), every round of both sides in
# target/bench/rounds.jsonl (rounds-cuda.jsonl), criterion's
# <target>/criterion/<network>/<backend>/new/estimates.json (tch's under target/tch-bench/target/), and the table in target/bench/table.md
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
rounds=1
chosen_backends=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) networks=("${QUICK[@]}") ;;
    --threads) threads="$2"; shift ;;
    --only) IFS=, read -r -a networks <<<"$2"; shift ;;
    --skip-torch) run_torch=0 ;;
    --skip-foil) run_foil=0 ;;
    --device) device="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --backends) IFS=, read -r -a chosen_backends <<<"$2"; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$device" in
  cpu) backends=(flex ndarray); known=(flex ndarray candle tch); features=(); suffix="" ;;
  cuda) backends=(cuda); known=(cuda); features=(--features cuda); suffix="-cuda" ;;
  *) echo "unknown device $device; expected cpu or cuda" >&2; exit 2 ;;
esac
if [[ ${#chosen_backends[@]} -gt 0 ]]; then
  for b in "${chosen_backends[@]}"; do
    [[ " ${known[*]} " == *" $b "* ]] || { echo "unknown backend $b for --device $device; expected some of: ${known[*]}" >&2; exit 2; }
  done
  backends=("${chosen_backends[@]}")
  # candle is compiled in only on request (the `candle` feature).
  if [[ " ${backends[*]} " == *" candle "* ]]; then features+=(--features candle); fi
fi
# foil's own build times every backend but tch, which the throwaway crate below times.
foil_backends=()
tch=0
for b in "${backends[@]}"; do
  if [[ $b == tch ]]; then tch=1; else foil_backends+=("$b"); fi
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds expects a positive integer, found $rounds" >&2; exit 2; }
for n in "${networks[@]}"; do
  [[ " ${ALL[*]} " == *" $n "* ]] || { echo "unknown network $n; expected some of: ${ALL[*]}" >&2; exit 2; }
done

PY=${FOIL_PYTHON:-tools/.venv/bin/python}
BENCH_BIN=${FOIL_BENCH_BIN:-}
OUT=target/bench
# Where criterion writes (it follows CARGO_TARGET_DIR).
CRIT="${CARGO_TARGET_DIR:-target}/criterion"
mkdir -p "$OUT"
only=$(IFS=,; echo "${networks[*]}")
# criterion's filter is a regex over "<network>/<backend>".
nets="$(IFS='|'; echo "${networks[*]}")"
filter="^($nets)/($(IFS='|'; echo "${foil_backends[*]-}"))\$"
TORCH_OUT="$OUT/torch$suffix.jsonl"
torch_failed=0

ROUNDS_OUT="$OUT/rounds$suffix.jsonl"
: >"$ROUNDS_OUT"
if [[ -n $BENCH_BIN ]]; then
  [[ -x $BENCH_BIN ]] || { echo "FOIL_BENCH_BIN=$BENCH_BIN is not an executable file" >&2; exit 2; }
  [[ $tch == 0 ]] || { echo "FOIL_BENCH_BIN times foil's own backends, not tch" >&2; exit 2; }
elif [[ $run_foil == 1 && ${#foil_backends[@]} -gt 0 ]]; then
  echo "== foil ($threads threads): building" >&2
  cargo bench --bench networks ${features[@]+"${features[@]}"} --no-run >&2
fi
# foil's bench, as `cargo bench` runs it (criterion times only with `--bench`).
foil_bench() {
  if [[ -n $BENCH_BIN ]]; then
    "$BENCH_BIN" --bench "$@"
  else
    cargo bench --bench networks ${features[@]+"${features[@]}"} -- "$@"
  fi
}
TCH_DIR=target/tch-bench
# Its own target folder: burn is compiled with other features there.
TCH_TARGET="$PWD/$TCH_DIR/target"
crit_of() { if [[ $1 == tch ]]; then echo "$TCH_TARGET/criterion"; else echo "$CRIT"; fi; }
# cargo for the throwaway crate: torch-sys finds libtorch through LIBTORCH_PYTHON (first on
# PATH), so it never downloads one.
tch_cargo() {
  PATH="$(dirname "$LIBTORCH_PYTHON"):$PATH" LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$TCH_TARGET" \
    cargo "$@" --manifest-path "$TCH_DIR/Cargo.toml" --bench networks
}
if [[ $run_foil == 1 && $tch == 1 ]]; then
  [[ -n "${LIBTORCH_PYTHON:-}" ]] || {
    echo "--backends tch needs LIBTORCH_PYTHON, a python with torch 2.9.0 (the libtorch tch 0.22 is built for), e.g." >&2
    echo "  python3 -m venv ~/torch29 && ~/torch29/bin/pip install torch==2.9.0 && export LIBTORCH_PYTHON=~/torch29/bin/python" >&2
    exit 2
  }
  torch_lib=$("$LIBTORCH_PYTHON" -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent / "lib")')
  mkdir -p "$TCH_DIR/src"
  : >"$TCH_DIR/src/lib.rs"
  # The same dependency versions as foil's own build, plus burn-tch.
  [[ -f "$TCH_DIR/Cargo.lock" ]] || cp Cargo.lock "$TCH_DIR/"
  cat >"$TCH_DIR/Cargo.toml" <<EOF
# Written by scripts/bench.sh: benches/networks.rs against burn-tch (its \`tch\` feature).
[package]
name = "foil-tch-bench"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[features]
default = ["tch", "mimalloc"]
tch = []
mimalloc = ["dep:mimalloc"]

[dependencies]
foil = { path = "$PWD", default-features = false }
burn = { version = "=0.21.0", default-features = false, features = ["std", "tch", "autodiff"] }
mimalloc = { version = "0.1", default-features = false, optional = true }

[dev-dependencies]
criterion = { version = "0.5", default-features = false }

[[bench]]
name = "networks"
path = "$PWD/benches/networks.rs"
harness = false

[patch.crates-io]
burn-flex = { path = "$PWD/vendor/burn-flex" }

[lints.rust]
# foil's own features (flex, ndarray, candle, cuda, wgpu) are not this crate's.
unexpected_cfgs = "allow"
EOF
  echo "== burn-tch: building $TCH_DIR" >&2
  tch_cargo bench --no-run >&2
fi
for ((round = 1; round <= rounds; round++)); do
  if [[ $run_torch == 1 ]]; then
    echo "== round $round/$rounds: PyTorch ($device, $threads threads): $only" >&2
    # A failure on the PyTorch side leaves foil's rows to run (the table says n/a for it).
    if ! "$PY" tools/bench_torch.py --threads "$threads" --device "$device" --only "$only" \
      | tee "$TORCH_OUT.tmp" >&2; then
      echo "the PyTorch side failed (the rows it timed are kept): foil's rows still run" >&2
      torch_failed=1
    fi
    mv "$TORCH_OUT.tmp" "$TORCH_OUT"
    "$PY" -c 'import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        d = json.loads(line)
        print(json.dumps({"round": int(sys.argv[2]), "side": "torch", "name": d["name"], "seconds": d["seconds"]}))' \
      "$TORCH_OUT" "$round" >>"$ROUNDS_OUT"
  fi
  if [[ $run_foil == 1 ]]; then
    # Stale estimates must not pass for this run's: drop the selected networks' results first.
    for n in "${networks[@]}"; do
      for b in "${backends[@]}"; do rm -rf "$(crit_of "$b")/${n:?}/${b:?}"; done
    done
    if [[ ${#foil_backends[@]} -gt 0 ]]; then
      echo "== round $round/$rounds: foil: $filter" >&2
      RAYON_NUM_THREADS=$threads MATMUL_NUM_THREADS=$threads \
        foil_bench --noplot "$filter" >&2
    fi
    if [[ $tch == 1 ]]; then
      echo "== round $round/$rounds: burn-tch: ^($nets)/tch\$" >&2
      LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=$threads \
        tch_cargo bench -- --noplot "^($nets)/tch\$" >&2
    fi
    for n in "${networks[@]}"; do
      for b in "${backends[@]}"; do
        est="$(crit_of "$b")/$n/$b/new/estimates.json"
        [[ -f "$est" ]] || continue
        "$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))["median"]["point_estimate"] / 1e9
print(json.dumps({"round": int(sys.argv[2]), "side": sys.argv[3], "name": sys.argv[4], "seconds": s}))' \
          "$est" "$round" "$b" "$n" >>"$ROUNDS_OUT"
      done
    done
  fi
done

# The table: median seconds of each side over the rounds, and foil's time as a multiple of
# PyTorch's (the median of the per-round ratios; their range too when there were several rounds).
# A side not run this time (--skip-torch / --skip-foil) is read from its last results.
"$PY" - "$TORCH_OUT" "$only" "$CRIT" "$device" "${backends[*]}" "$ROUNDS_OUT" "$rounds" "$TCH_TARGET/criterion" <<'EOF' | tee "$OUT/table$suffix.md"
import json, pathlib, statistics, sys

torch_path, names, crit, device, backends, rounds_path, rounds, tch_crit = sys.argv[1:9]
backends, names, rounds = backends.split(), names.split(","), int(rounds)

# seconds[(side, name)] = {round: seconds}
seconds = {}
for line in pathlib.Path(rounds_path).read_text().splitlines():
    if line.strip():
        d = json.loads(line)
        seconds.setdefault((d["side"], d["name"]), {})[d["round"]] = d["seconds"]

def last_torch(name):
    path = pathlib.Path(torch_path)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and json.loads(line)["name"] == name:
                return json.loads(line)["seconds"]
    return None

def last_foil(name, backend):
    p = pathlib.Path(tch_crit if backend == "tch" else crit) / name / backend / "new/estimates.json"
    return json.loads(p.read_text())["median"]["point_estimate"] / 1e9 if p.exists() else None

def per_round(side, name, fallback):
    got = seconds.get((side, name))
    if got:
        return got
    return {r: fallback for r in range(1, rounds + 1)} if fallback is not None else {}

def secs(s):
    return f"{s:#.3g}"  # three significant digits, trailing zeros kept: 6.00, 0.0870

def cell(foil, torch):
    if not foil:
        return "n/a"
    text = secs(statistics.median(foil.values()))
    ratios = [foil[r] / torch[r] for r in foil if r in torch]
    if ratios:
        text += f" ({statistics.median(ratios):.2f}x"
        if len(ratios) > 1:
            text += f", {min(ratios):.2f}-{max(ratios):.2f}"
        text += ")"
    return text

head = f"x PyTorch, range over {rounds} rounds" if rounds > 1 else "x PyTorch"
print(f"| network | PyTorch {device} s |" + "".join(f" foil {b} s ({head}) |" for b in backends))
print("|---|---|" + "---|" * len(backends))
for name in names:
    torch = per_round("torch", name, last_torch(name))
    torch_cell = secs(statistics.median(torch.values())) if torch else "n/a"
    cells = "".join(f" {cell(per_round(b, name, last_foil(name, b)), torch)} |" for b in backends)
    print(f"| {name} | {torch_cell} |{cells}")
EOF
[[ $torch_failed == 0 ]] || { echo "the PyTorch side failed (above)" >&2; exit 1; }
