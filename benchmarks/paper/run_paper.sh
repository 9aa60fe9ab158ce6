#!/usr/bin/env bash
# Paper-scale recipe (GPU; written to be run, NOT run in this repository's CI or on the CPU benchmark machine).
#
#   VOC 2012 / COCO 2014 / NUS-WIDE / CUB-200-2011 (paper Table 2): ImageNet ResNet-50, 448 px, batch 16,
#     end-to-end 10 epochs and LinearInit (25 head epochs on cached features + 10 fine-tuning epochs),
#     methods full an iu wan lsan epr role ll-r ll-ct ll-cp with the authors' best lr / Δrel (configs/<ds>/).
#   OpenImages V3 (paper Table 3): ImageNet ResNet-101, 224 px, global batch 288 over 4 GPUs (torchrun),
#     20 epochs, lr 2e-5, methods iu an wan lsan ll-r ll-ct ll-cp, group mAP G1-G5.
# Then benchmarks/paper/summarize.py writes benchmarks/results/paper.md with the paper's numbers beside ours.
#
# Usage (from the repository root):
#   VOC_ROOT=... COCO_ROOT=... NUS_ROOT=... CUB_ROOT=... OI_ROOT=... bash benchmarks/paper/run_paper.sh
#   DRY_RUN=1 bash benchmarks/paper/run_paper.sh          # print the commands only
# Optional: DATASETS="voc coco" SCHEMES="end-to-end" SEEDS="0 1 2" GPUS=4 OUT=runs/paper
# Needs local ImageNet weights for resnet50/resnet101 (see `wsml train --help` / wsml/models/weights.py).
# Time (one A100-class GPU, rough): VOC ~1 h, COCO ~8 h, NUS ~14 h, CUB ~1 h per method and scheme;
# OpenImages ~2 days per method on 4 GPUs.
set -euo pipefail
cd "$(dirname "$0")/../.."
WSML=${WSML:-.venv/bin/wsml}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/paper}
SEEDS=${SEEDS:-0}
GPUS=${GPUS:-4}
DATASETS=${DATASETS:-voc coco nus cub openimages}
SCHEMES=${SCHEMES:-end-to-end linearinit}
METHODS="full an iu wan lsan epr role ll-r ll-ct ll-cp"
OI_METHODS="iu an wan lsan ll-r ll-ct ll-cp"

run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
root_of() { case $1 in voc) echo "${VOC_ROOT:-}";; coco) echo "${COCO_ROOT:-}";; nus) echo "${NUS_ROOT:-}";;
                        cub) echo "${CUB_ROOT:-}";; openimages) echo "${OI_ROOT:-}";; esac; }

for ds in $DATASETS; do
  root=$(root_of "$ds")
  # 1. Prepared data: the single-positive protocol (seed 1200, val = 20 % of train) and, for `full`, every label.
  if [ ! -f "data/$ds/manifest.json" ]; then
    [ -n "$root" ] || [ -n "${DRY_RUN:-}" ] || { echo "set ${ds^^}_ROOT (raw $ds files)" >&2; exit 2; }
    run "$WSML" prepare "$ds" --root "${root:-<raw $ds>}" --out "data/$ds"
  fi
  if [ "$ds" != openimages ] && [ ! -f "data/$ds-full/manifest.json" ]; then
    run "$WSML" prepare "$ds" --root "${root:-<raw $ds>}" --out "data/$ds-full" num_pos=-1 num_neg=-1
  fi
  # 2. Training: one run folder per (scheme, method, seed) under $OUT/<ds>/<scheme>/<method>/s<seed>.
  if [ "$ds" = openimages ]; then
    for m in $OI_METHODS; do for s in $SEEDS; do
      run torchrun --nproc-per-node "$GPUS" -m wsml.cli train "configs/openimages/$m.yaml" train.seed="$s" \
        run.out="$OUT/openimages/end-to-end/$m" run.name="s$s" run.quiet=true
    done; done
    continue
  fi
  for scheme in $SCHEMES; do
    dir=configs/$ds; [ "$scheme" = linearinit ] && dir=configs/$ds/linearinit
    for m in $METHODS; do for s in $SEEDS; do
      run "$WSML" train "$dir/$m.yaml" train.seed="$s" run.out="$OUT/$ds/$scheme/$m" run.name="s$s" run.quiet=true
    done; done
  done
done
# 3. Tables: mean ± std per method, Δ vs Naive AN, AN->Full gap closed, group mAP (OpenImages), paper beside.
run "$PY" benchmarks/paper/summarize.py "$OUT" --out benchmarks/results/paper.md
