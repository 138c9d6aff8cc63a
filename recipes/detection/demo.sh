#!/usr/bin/env bash
# The detection transfer demo, offline, in about 10 minutes on 2 CPU cores: an SSDlite
# detector learns digits 0-4 from scratch on 64 px canvases (make_digits_voc.py), then
# four recipes learn digits 5-9 from 25 labelled canvases (5 a class): the new class
# layers alone, with the upper stages, everything (all three from the source run's
# weights), and the same detector from scratch. SEEDS (default: one seed, 0) draws the
# target canvases (make_digits_voc.py --seed N) and seeds the runs (--set seed=N);
# `ftr compare` prints the runs side by side (with --mean over the seeds when there are
# several), after the environment it was measured in.
# Run from the repository root (`make demo-detection` does, in the project's .venv).
set -euo pipefail
SEEDS=${SEEDS:-0}
arms="head upper finetune scratch"
make_voc="python recipes/detection/make_digits_voc.py --size 64"

# the source canvases (digits 0-4: 200 train, 50 val) are the same whatever the seed
$make_voc --out data/digits_voc/source --digits 0-4 --images 250 --val 0.2 --seed 0
ftr run recipes/detection/source.ftr --overwrite --quiet
runs=()
for seed in $SEEDS; do
  # digits 5-9: 25 train canvases (5 with each digit first), 100 val
  $make_voc --out data/digits_voc/target --digits 5-9 --images 125 --val 0.8 --seed "$seed"
  for arm in $arms; do
    out="runs/det-$arm-seed$seed"
    ftr run "recipes/detection/$arm.ftr" --set "seed=$seed" --out "$out" --overwrite --quiet
    runs+=("$out")
  done
done

echo
python -c 'import platform, os, numpy, PIL, sklearn, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"numpy {numpy.__version__}, Pillow {PIL.__version__}, scikit-learn {sklearn.__version__}; "
      f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")'
echo "seeds: $SEEDS; $SECONDS s in all"
ftr compare runs/det-source
if [ "$(wc -w <<<"$SEEDS")" -gt 1 ]; then
  ftr compare --mean "${runs[@]}"
else
  ftr compare "${runs[@]}"
fi
