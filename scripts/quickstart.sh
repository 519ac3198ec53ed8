#!/usr/bin/env bash
# The foil quickstart: MaskDiME and DIFFusion counterfactuals on Fashion-MNIST "Shirt" vs
# "T-shirt/top", from nothing. It installs what is missing (Debian's dataset-fashion-mnist, the
# LPIPS weights), takes the small networks trained by `foil train` that ship in
# assets/quickstart/ (or trains them, resuming if interrupted, for another pair or with
# TRAIN=1), explains test images of both classes in both directions with both methods and
# prints the success ratio and LPIPS per method and direction.
#
#   scripts/quickstart.sh                            # Shirt vs T-shirt/top, shipped weights
#   PAIR="Pullover,Coat" scripts/quickstart.sh       # the second shipped pair (its decoder: LoRA on the first's)
#   PAIR="Sandal,Sneaker" scripts/quickstart.sh      # another pair: trains first (~40 min on 2 cores)
#   PER_DIRECTION=100 scripts/quickstart.sh          # more test images
#
# Outputs under runs/quickstart/<pair>/: maskdime/ and diffusion/ (per image: original,
# counterfactual, grid with the change heat map, JSON; one grid per direction,
# <from>_to_<to>.png; metrics.json), diffusion/study/index.html (the study page with
# transitions and a quiz, docs/teach.md), and the trained networks when it trains.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIR="${PAIR:-Shirt,T-shirt/top}"
PER_DIRECTION="${PER_DIRECTION:-16}"
DEVICE="${DEVICE:-cpu}"
SIZE=28
ORACLE_WIDTH=0.125
SLUG="$(echo "$PAIR" | tr -c 'A-Za-z0-9,\n-' '_' | tr ',' '-')"
RUN="runs/quickstart/$SLUG"
SHIPPED="assets/quickstart/$SLUG"

say() { printf '\n== %s\n' "$*"; }

say "building foil (release)"
# FOIL=path uses a binary built before; else build one.
if [ -z "${FOIL:-}" ]; then
  cargo build --release --quiet --bin foil
  FOIL=target/release/foil
fi

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  say "installing Debian's dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q dataset-fashion-mnist
fi

# Into foil's home folder ($FOIL_HOME, else ~/.cache/foil); says so and does nothing once there.
say "the published LPIPS weights"
$FOIL weights lpips

start=$(date +%s)
if [ -d "$SHIPPED" ] && [ -z "${TRAIN:-}" ]; then
  say "using the networks in $SHIPPED (trained by the commands in $SHIPPED/README.md)"
  NETS="$SHIPPED"
else
  NETS="$RUN"
  say "training the oracle"
  $FOIL train oracle --classes "$PAIR" --arch resnet18 --width "$ORACLE_WIDTH" --steps 2000 \
    --batch-size 64 --lr 3e-3 --lr-schedule cosine --warmup 100 --flip --shift 2 --seed 0 \
    --image-size $SIZE --out "$NETS/oracle" --device "$DEVICE"
  BASE="assets/quickstart/Shirt-T-shirt_top/decoder"
  if [ "$SLUG" != "Shirt-T-shirt_top" ] && [ -d "$BASE" ]; then
    say "LoRA-tuning the shipped DIFFusion decoder ($BASE) on $PAIR"
    $FOIL train lora --base "$BASE" --classes "$PAIR" --steps 600 --batch-size 32 --lr 3e-3 \
      --lr-schedule cosine --warmup 30 --seed 0 --out "$NETS/decoder" --device "$DEVICE"
  else
    say "training DIFFusion's decoder and encoder"
    $FOIL train decoder --classes "$PAIR" --steps 600 --encoder-steps 1500 --batch-size 32 --lr 1e-3 --seed 0 \
      --image-size $SIZE --out "$NETS/decoder" --device "$DEVICE"
  fi
  say "training MaskDiME's DDPM"
  $FOIL train ddpm --classes "$PAIR" --steps 500 --batch-size 32 --lr 1e-3 --seed 0 \
    --image-size $SIZE --out "$NETS/ddpm" --device "$DEVICE"
fi

say "MaskDiME on $PER_DIRECTION test images per direction"
$FOIL maskdime --classes "$PAIR" --oracle "$NETS/oracle" --ddpm "$NETS/ddpm" \
  --per-direction "$PER_DIRECTION" --out "$RUN/maskdime" --device "$DEVICE"

say "DIFFusion on $PER_DIRECTION test images per direction"
$FOIL diffusion --classes "$PAIR" --oracle "$NETS/oracle" --decoder "$NETS/decoder" \
  --lambda 2,3,4 --per-direction "$PER_DIRECTION" --out "$RUN/diffusion" --device "$DEVICE"

say "teaching material: transitions and the study page"
$FOIL teach --classes "$PAIR" --results "$RUN/diffusion" --decoder "$NETS/decoder" \
  --max-items 8 --quiz 20 --device "$DEVICE"

for method in maskdime diffusion; do
  say "scoring $method"
  $FOIL evaluate --results "$RUN/$method"
done
echo
echo "quickstart took $(( $(date +%s) - start )) s after the build and set-up"
echo "grids: $RUN/{maskdime,diffusion}/*_to_*.png"
echo "study page (open in a browser): $RUN/diffusion/study/index.html"
