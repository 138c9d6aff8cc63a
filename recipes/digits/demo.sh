#!/usr/bin/env bash
# The transfer-learning demo, offline, in a few minutes on 2 CPU cores: a resnet18 is
# trained on digits 0-4, then four recipes learn digits 5-9 from 10 labelled images
# each (a linear probe, gradual unfreezing, full fine-tuning, and from scratch), and
# ftr compare prints the table. Run from the repository root.
set -euo pipefail
python recipes/digits/prepare.py --out data/digits --shots 10
for recipe in source probe gradual finetune scratch; do
  ftr run "recipes/digits/$recipe.ftr" --overwrite --quiet
done
ftr compare runs/digits-probe runs/digits-gradual runs/digits-finetune runs/digits-scratch
