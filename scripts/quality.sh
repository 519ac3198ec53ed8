#!/usr/bin/env bash
# The quality-bar benchmark of issue 8 (a script, not a timed test): on the first N held-out
# test images per direction (default 100), MaskDiME, DIFFusion and DIFFusion's two baselines
# (the target class's mean embedding alone; the nearest target-class training image by
# embedding), each scored by `foil evaluate` (success ratio per direction, LPIPS, changed
# pixels), beside the oracle's held-out accuracy. Uses the networks of scripts/quickstart.sh.
#
#   scripts/quality.sh                      # Shirt vs T-shirt/top, 100 per direction
#   N=30 NETS=runs/quickstart/Pullover-Coat PAIR=Pullover,Coat scripts/quality.sh
#   METHODS="maskdime nearest" scripts/quality.sh   # a subset of the methods
set -euo pipefail
cd "$(dirname "$0")/.."

PAIR="${PAIR:-Shirt,T-shirt/top}"
N="${N:-100}"
# DIFFusion's edit strengths: 2, then 3 and 4 for the inputs the weaker ones left unflipped.
LAMBDA="${LAMBDA:-2,3,4}"
DEVICE="${DEVICE:-cpu}"
METHODS="${METHODS:-maskdime diffusion target-mean nearest}"
SLUG="$(echo "$PAIR" | tr -c 'A-Za-z0-9,\n-' '_' | tr ',' '-')"
NETS="${NETS:-assets/quickstart/$SLUG}"
OUT="${OUT:-runs/quality/$SLUG}"

# FOIL=path uses a binary built before (e.g. a copy, while the tree changes); else build one.
if [ -z "${FOIL:-}" ]; then
  cargo build --release --quiet --bin foil
  FOIL=target/release/foil
fi
$FOIL weights lpips   # into foil's home folder ($FOIL_HOME or ~/.cache/foil); a no-op once there

echo "oracle: $(grep -o '"test_accuracy": [0-9.]*' "$NETS/oracle/model.json")"
run() { # name, command...
  local name=$1; shift
  local t0; t0=$(date +%s)
  "$@" --classes "$PAIR" --oracle "$NETS/oracle" --per-direction "$N" --out "$OUT/$name" \
    --device "$DEVICE"
  echo "$name: $(( $(date +%s) - t0 )) s"
}
for name in $METHODS; do
  case $name in
    maskdime) run maskdime $FOIL maskdime --ddpm "$NETS/ddpm" ;;
    diffusion) run diffusion $FOIL diffusion --decoder "$NETS/decoder" --lambda "$LAMBDA" ;;
    target-mean) run target-mean $FOIL diffusion --decoder "$NETS/decoder" --method target-mean ;;
    nearest) run nearest $FOIL diffusion --decoder "$NETS/decoder" --method nearest ;;
    *) echo "unknown method $name" >&2; exit 2 ;;
  esac
done
for name in $METHODS; do
  echo "== $name"
  $FOIL evaluate --results "$OUT/$name" --oracle "$NETS/oracle"
done
