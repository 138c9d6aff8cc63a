#!/usr/bin/env bash
# The distillation demo, offline, on 2 CPU cores: the fine-tuned resnet18 of demo.sh
# (finetune.ftr: trained on digits 0-4, then fine-tuned on digits 5-9 from 10 labelled
# images per class) teaches a shufflenet_v2_x0_5 from scratch (distill.ftr), against the
# same student without a teacher (student.ftr), over SEEDS: seed N draws the 10 labelled
# images per class (prepare.py --seed N), seeds the runs (--set seed=N), and the teacher
# of seed N is the fine-tuned run of those same images. `ftr compare --mean` prints each
# arm's mean and sample standard deviation over the seeds; the teachers' own are printed too.
# Run from the repository root, with ftr on the PATH (the project's .venv).
set -euo pipefail
SEEDS=${SEEDS:-0 1 2}

# the source images (digits 0-4) are the same whatever the seed
python recipes/digits/prepare.py --out data/digits --shots 10 --seed 0
ftr run recipes/digits/source.ftr --overwrite --quiet
teachers=() runs=()
for seed in $SEEDS; do
  python recipes/digits/prepare.py --out data/digits --shots 10 --seed "$seed"
  teacher="runs/digits-finetune-seed$seed"
  ftr run recipes/digits/finetune.ftr --set "seed=$seed" --out "$teacher" --overwrite --quiet
  teachers+=("$teacher")
  ftr run recipes/digits/student.ftr --set "seed=$seed" --out "runs/digits-student-seed$seed" --overwrite --quiet
  ftr run recipes/digits/distill.ftr --set "seed=$seed" --set "teacher.run=\"$teacher\"" \
    --out "runs/digits-distill-seed$seed" --overwrite --quiet
  runs+=("runs/digits-student-seed$seed" "runs/digits-distill-seed$seed")
done

echo
python -c 'import platform, os, numpy, PIL, sklearn, torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"numpy {numpy.__version__}, Pillow {PIL.__version__}, scikit-learn {sklearn.__version__}; "
      f"{platform.machine()}, {os.cpu_count()} cores")'
echo "seeds: $SEEDS; $SECONDS s in all"
echo "the teachers (finetune.ftr, resnet18):"
ftr compare --mean "${teachers[@]}"
echo "the students (shufflenet_v2_x0_5 from scratch):"
ftr compare --mean "${runs[@]}"
