#!/usr/bin/env bash
# The foil quickstart: MaskDiME counterfactuals on Fashion-MNIST "Shirt" vs "T-shirt/top",
# from nothing. It installs what is missing (Debian's dataset-fashion-mnist, the LPIPS weights),
# trains a small oracle and a small DDPM with `foil train` (resuming if interrupted), explains
# test images of both classes in both directions and prints the success ratio and LPIPS.
#
#   scripts/quickstart.sh                 # Shirt vs T-shirt/top
#   PAIR="Pullover,Coat" scripts/quickstart.sh
#   DDPM_STEPS=3000 PER_DIRECTION=50 scripts/quickstart.sh   # longer, better
#
# Outputs under runs/quickstart/<pair>/: oracle/, ddpm/, maskdime/ (per image: original,
# counterfactual, grid with the change heat map, JSON) and maskdime/metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIR="${PAIR:-Shirt,T-shirt/top}"
ORACLE_STEPS="${ORACLE_STEPS:-300}"
DDPM_STEPS="${DDPM_STEPS:-600}"
PER_DIRECTION="${PER_DIRECTION:-16}"
DEVICE="${DEVICE:-cpu}"
RUN="runs/quickstart/$(echo "$PAIR" | tr -c 'A-Za-z0-9,\n-' '_' | tr ',' '-')"

say() { printf '\n== %s\n' "$*"; }

say "building foil (release)"
cargo build --release --quiet --bin foil
FOIL=target/release/foil

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  say "installing Debian's dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q dataset-fashion-mnist
fi

if [ ! -f assets/lpips/alexnet.safetensors ]; then
  say "converting the published LPIPS weights"
  $FOIL weights lpips
fi

start=$(date +%s)
say "training the oracle ($ORACLE_STEPS steps)"
$FOIL train oracle --classes "$PAIR" --arch resnet18 --width 0.125 --steps "$ORACLE_STEPS" \
  --batch-size 64 --lr 2e-3 --seed 0 --out "$RUN/oracle" --device "$DEVICE"

say "training the DDPM ($DDPM_STEPS steps)"
$FOIL train ddpm --classes "$PAIR" --steps "$DDPM_STEPS" --batch-size 32 --lr 1e-3 --seed 0 \
  --out "$RUN/ddpm" --device "$DEVICE"

say "MaskDiME on $PER_DIRECTION test images per direction"
$FOIL maskdime --classes "$PAIR" --oracle "$RUN/oracle" --ddpm "$RUN/ddpm" \
  --per-direction "$PER_DIRECTION" --out "$RUN/maskdime" --device "$DEVICE"

say "scoring"
$FOIL evaluate --results "$RUN/maskdime"
echo "quickstart took $(( $(date +%s) - start )) s after the build; grids: $RUN/maskdime/*/*.grid.png"
