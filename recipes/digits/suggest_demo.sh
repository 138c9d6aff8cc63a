#!/usr/bin/env bash
# The evidence for `ftr suggest` on the digits demo: for each seed's draw of the 10
# labelled images per class, `ftr suggest lr` and `ftr suggest freeze` measure on
# finetune.ftr and write a recipe each (freeze at the default --fraction 0.5 and at
# 0.1); the recipe as written and the three suggested ones then train on that draw, and
# `ftr compare --mean` prints the four arms.
# The suggested recipes are kept under runs/suggest/ to be read.
# Run from the repository root in the project's environment, after the source run
# (`ftr run recipes/digits/source.ftr`, as recipes/digits/demo.sh does).
set -euo pipefail
SEEDS=${SEEDS:-0 1 2}
mkdir -p runs/suggest
runs=()
for seed in $SEEDS; do
  python recipes/digits/prepare.py --out data/digits --shots 10 --seed "$seed"
  ftr suggest lr recipes/digits/finetune.ftr -o "runs/suggest/lr-seed$seed.ftr" --plot "runs/suggest/lr-seed$seed.png"
  ftr suggest freeze recipes/digits/finetune.ftr -o "runs/suggest/freeze-seed$seed.ftr"
  ftr suggest freeze recipes/digits/finetune.ftr --fraction 0.1 -o "runs/suggest/freeze-0.1-seed$seed.ftr"
  for arm in finetune lr freeze freeze-0.1; do
    recipe="runs/suggest/$arm-seed$seed.ftr"
    [ "$arm" = finetune ] && recipe=recipes/digits/finetune.ftr
    out="runs/digits-suggest-$arm-seed$seed"
    ftr run "$recipe" --set "seed=$seed" --set "recipe=\"digits-$arm\"" --out "$out" --overwrite --quiet
    runs+=("$out")
  done
done
echo "seeds: $SEEDS; $SECONDS s in all"
ftr compare --mean "${runs[@]}"
