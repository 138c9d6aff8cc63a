#!/usr/bin/env bash
# The transfer-learning demo, offline, in about 10 minutes on 2 CPU cores: a resnet18 is
# trained once on digits 0-4, then five recipes learn digits 5-9 from 10 labelled images
# per class (a linear probe, gradual unfreezing, full fine-tuning, LP-FT: the same
# fine-tuning from a probed head, and from scratch),
# each over SEEDS: seed N draws the 10 labelled images per class (prepare.py --seed N)
# and seeds the run (--set seed=N). `ftr compare --mean` prints each recipe's mean and
# sample standard deviation over the seeds, after the environment it was measured in.
# Run from the repository root (`make demo` does, in the project's .venv).
set -euo pipefail
SEEDS=${SEEDS:-0 1 2}
arms="probe gradual finetune lpft scratch"

# the source images (digits 0-4) are the same whatever the seed
python recipes/digits/prepare.py --out data/digits --shots 10 --seed 0
ftr run recipes/digits/source.ftr --overwrite --quiet
runs=()
for seed in $SEEDS; do
  python recipes/digits/prepare.py --out data/digits --shots 10 --seed "$seed"
  for arm in $arms; do
    out="runs/digits-$arm-seed$seed"
    ftr run "recipes/digits/$arm.ftr" --set "seed=$seed" --out "$out" --overwrite --quiet
    runs+=("$out")
  done
done

echo
python -c 'import platform, os, numpy, PIL, sklearn, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"numpy {numpy.__version__}, Pillow {PIL.__version__}, scikit-learn {sklearn.__version__}; "
      f"{platform.machine()}, {os.cpu_count()} cores")'
echo "seeds: $SEEDS; $SECONDS s in all"
ftr compare --mean "${runs[@]}"
