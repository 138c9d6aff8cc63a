#!/usr/bin/env bash
# Pseudo-labels on the digits demo: for each seed, prepare.py draws 10 labelled images
# per target class and puts half of the remaining target images in an unlabeled folder
# (--unlabeled 0.5; the other half validates); finetune.ftr (labels only) and
# pseudo.ftr (the same, plus pseudo_label on the unlabeled folder) and
# pseudo_balanced.ftr (pseudo.ftr with balanced=true: FlexMatch's class-wise
# thresholds) train on that draw, and `ftr compare --mean` prints the arms over the
# seeds. ARMS="pseudo_balanced" runs one arm alone (the others' runs are kept).
# Run from the repository root in the project's environment, after the source run
# (`ftr run recipes/digits/source.ftr`, as recipes/digits/demo.sh does).
set -euo pipefail
SEEDS=${SEEDS:-0 1 2}
ARMS=${ARMS:-finetune pseudo pseudo_balanced}
runs=()
for seed in $SEEDS; do
  python recipes/digits/prepare.py --out data/digits --shots 10 --seed "$seed" --unlabeled 0.5
  for arm in $ARMS; do
    out="runs/digits-pseudo-demo-$arm-seed$seed"
    ftr run "recipes/digits/$arm.ftr" --set "seed=$seed" --out "$out" --overwrite --quiet
    runs+=("$out")
  done
done
echo "seeds: $SEEDS; $SECONDS s in all"
ftr compare --mean "${runs[@]}"
# per run: final val accuracy, and the pseudo-labels' share and accuracy at their first and last epoch
python - "${runs[@]}" <<'PY'
import json, sys
for run in sys.argv[1:]:
    rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    pseudo = [r for r in rows if "pseudo_share" in r]
    line = f"{run}: val_accuracy {rows[-1]['val_accuracy']:.4f}"
    for r in pseudo[:1] + pseudo[-1:]:
        line += f"; epoch {r['epoch']}: pseudo_share {r['pseudo_share']:.3f}, pseudo_accuracy {r.get('pseudo_accuracy', float('nan')):.3f}"
    print(line)
PY
