#!/usr/bin/env bash
# The multi-seed study of the paper's findings (issue 15), piecewise: one STEP of one REGIME per call, each
# call ≤ 90 min on 2 cores (see benchmarks/analysis/Makefile for the targets and their measured cost).
#
#   bash benchmarks/analysis/study.sh REGIME STEP      REGIME: scratch | scratch-short | pretrained
#   STEP: an | delta | ll | full | table1 | frac | frac_steps | pointing
#
# Runs go to $OUT/<regime>/<group>/<name>-s<seed> (default OUT=runs/study); a run whose summary.json exists is
# reused, an interrupted one (last.pt, no summary.json) is resumed, and one whose evidence `summarize` stored in
# benchmarks/analysis/results/study/evidence/ is skipped, so a step continues where it stopped, on any machine.
# Every run prints its wall time. The numbers, the per-seed CSV/JSON and the verdict table come from
# `python benchmarks/analysis/study.py summarize`.
# Environment: SEEDS (default "0 1 2"), METHODS (step ll: default "ll-r ll-ct ll-cp"), DELTAS (Fig 5 values),
# DELTA_SEEDS, FRACS (Fig 6 fractions), EPOCHS, PRE_LR (pretrained backbone lr), SMOKE=1 (tiny data and
# 2 epochs: proves the step runs end to end in a minute, into $OUT/smoke/), EXTRA (more key=value overrides).
set -euo pipefail

main() {
  cd "$(dirname "$0")/../.."
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's wsml, also for the helper script
  PY=${PY:-.venv/bin/python}
  OUT=${OUT:-runs/study}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  REGIME=$1; STEP=$2
  SEEDS=${SEEDS:-0 1 2}
  FRACS=${FRACS:-0.125 0.25 0.5}
  CB='callbacks=[memorization,modification]'
  case $REGIME in
    scratch)       EPOCHS=${EPOCHS:-30}; BASE=(); DELTAS=${DELTAS:-0.25 0.5 1 2 4}; DELTA_SEEDS=${DELTA_SEEDS:-$SEEDS} ;;
    scratch-short) EPOCHS=${EPOCHS:-8};  BASE=(); DELTAS=${DELTAS:-0.5 1 2 4 8} ;;
    pretrained)    EPOCHS=${EPOCHS:-10}; DELTAS=${DELTAS:-1 2 4}
                   # ImageNet EfficientNet-Lite0 fine-tuned end to end at 112 px; head lr = 10 x optim.lr
                   BASE=(model.backbone=efficientnet_lite0 model.pretrained=true "model.options={}"
                         data.image_size=112 optim.lr="${PRE_LR:-1.0e-4}" optim.head_lr_mult=10) ;;
    *) echo "study.sh: unknown regime '$REGIME' (scratch, scratch-short, pretrained)" >&2; exit 2 ;;
  esac
  [ "${SMOKE:-0}" = 1 ] && { OUT=$OUT/smoke; EPOCHS=2; }  # tiny: 300 mosaics, 2 epochs
  "step_$STEP"
}

data_args() {  # data_args CONFIG [FRAC]: the prepared data set of a method (full labels apart), smoke, fraction
  local path=data/fashion-mosaic-6k
  [[ $1 == *full.yaml ]] && path=$path-full
  local args=()
  if [ "${SMOKE:-0}" = 1 ]; then path=$path-smoke; args+=(data.options.num_train=300 data.options.num_test=100); fi
  if [ -n "${2:-}" ]; then path=$path-frac$2; args+=("data.options.train_frac=$2"); fi
  echo "data.path=$path" "${args[@]}"
}

train() {  # train GROUP NAME SEED CONFIG FRAC [overrides...]   (FRAC "" = all training images)
  local group=$1 name=$2 seed=$3 cfg=$4 frac=$5; shift 5
  local dir="$OUT/$REGIME/$group/$name-s$seed"
  if [ -f "$dir/summary.json" ]; then echo "reusing $dir"; return; fi
  if "$PY" benchmarks/analysis/study.py stored "$dir"; then echo "stored in the results: $dir"; return; fi
  local t0=$SECONDS data
  if [ -f "$dir/last.pt" ] && "$PY" -m wsml.cli train --resume "$dir" run.quiet=true; then  # interrupted: continue
    echo "wall time $dir: $((SECONDS - t0)) s (resumed; its summary.json counts the time before the interruption)"
    return
  fi
  read -r -a data <<< "$(data_args "$cfg" "$frac")"
  "$PY" -m wsml.cli train "$cfg" "${data[@]}" "${BASE[@]}" train.epochs="$EPOCHS" train.seed="$seed" "$CB" \
    run.out="$OUT/$REGIME/$group" run.name="$name-s$seed" run.overwrite=true run.quiet=true "$@" ${EXTRA:-}
  echo "wall time $dir: $((SECONDS - t0)) s"
}

delta() {  # the Δrel chosen on val from the delta step (LL-Ct, best val mAP); the default 2 until it exists
  "$PY" benchmarks/analysis/study.py choose-delta "$OUT/$REGIME/delta"
}

step_an() {  # Naive AN first: where its val mAP peaks tells whether the budget covers memorization
  # pretrained: 10 epochs is the paper's length, so these runs also give Table 1 (with the eval-mode pass)
  [ "$REGIME" = pretrained ] && CB='callbacks=[memorization,modification,memorization_eval]'
  for s in $SEEDS; do train main an "$s" configs/fashion/an.yaml ""; done
  "$PY" benchmarks/analysis/study.py peaks "$OUT/$REGIME/main"
}

step_delta() {  # Fig 5 and the Δrel of the main LL runs: LL-Ct over DELTAS (scratch: every seed; else the first)
  for s in ${DELTA_SEEDS:-${SEEDS%% *}}; do
    for d in $DELTAS; do train delta "ll-ct-d$d" "$s" configs/fashion/ll-ct.yaml "" loss.delta_rel="$d"; done
  done
  echo "Δrel chosen on val: $(delta)"
}

step_ll() {  # Table 2 mAP, Fig 4 (one Δrel for all three), Table 4: LL-R / LL-Ct / LL-Cp at the chosen Δrel
  local d; d=$(delta)
  for s in $SEEDS; do
    for m in ${METHODS:-ll-r ll-ct ll-cp}; do
      reuse_delta_run "$m" "$s" "$d" || train main "$m" "$s" "configs/fashion/$m.yaml" "" loss.delta_rel="$d"
    done
  done
}

reuse_delta_run() {  # reuse_delta_run METHOD SEED DELTA: LL-Ct's main run is the delta step's run at the chosen
  # Δrel (same config, seed and thread count, hence bit-identical): link it rather than train it again
  local src="$OUT/$REGIME/delta/ll-ct-d$3-s$2" dst="$OUT/$REGIME/main/$1-s$2"
  [ "$1" = ll-ct ] && [ -f "$src/summary.json" ] && [ ! -e "$dst" ] || return 1
  mkdir -p "$OUT/$REGIME/main" && ln -s "../delta/ll-ct-d$3-s$2" "$dst" && echo "linked $dst -> $src"
}

step_full() {  # Full label (every label observed) on all images: the upper bound and Fig 6's frac 1
  for s in $SEEDS; do train main full "$s" configs/fashion/full.yaml ""; done
}

step_table1() {  # Table 1 at the paper's length (10 epochs), during training and with the eval-mode pass
  local e=$EPOCHS; [ "${SMOKE:-0}" = 1 ] || EPOCHS=10
  CB='callbacks=[memorization,memorization_eval]'
  for s in $SEEDS; do train table1 an "$s" configs/fashion/an.yaml ""; done
  EPOCHS=$e
}

step_frac() {  # Fig 6: Naive AN / LL-Ct / Full on fractions of the training images (fraction 1 = main runs)
  local d; d=$(delta)
  for s in $SEEDS; do
    for f in $FRACS; do
      train frac "an-f$f" "$s" configs/fashion/an.yaml "$f"
      train frac "ll-ct-f$f" "$s" configs/fashion/ll-ct.yaml "$f" loss.delta_rel="$d"
      train frac "full-f$f" "$s" configs/fashion/full.yaml "$f"
    done
  done
}

step_frac_steps() {  # Fig 6 at matched optimisation steps: Full label on 1/8 of the images for 8x the epochs
  local e=$EPOCHS; EPOCHS=$((e * 8))
  for s in $SEEDS; do train frac-steps full-f0.125 "$s" configs/fashion/full.yaml 0.125; done
  EPOCHS=$e
}

step_pointing() {  # Table 4 on every main run (test split), CAM figure of seed 0
  for dir in "$OUT/$REGIME"/main/*-s*; do
    [ -f "$dir/summary.json" ] || continue
    [ -f "$dir/analysis/pointing_game.json" ] && { echo "reusing $dir/analysis/pointing_game.json"; continue; }
    local t0=$SECONDS
    "$PY" -m wsml.cli analyze pointing "$dir" --device cpu --overlays 0
    echo "wall time pointing $dir: $((SECONDS - t0)) s"
  done
  local runs=() names=()  # the CAM figure needs all four seed-0 run folders here (else the committed one stays)
  for m in an ll-r ll-ct ll-cp; do
    [ -f "$OUT/$REGIME/main/$m-s0/summary.json" ] && runs+=("$OUT/$REGIME/main/$m-s0") && names+=("$m")
  done
  [ ${#runs[@]} -eq 4 ] && "$PY" -m wsml.cli analyze cams "${runs[@]}" --names "$(IFS=,; echo "${names[*]}")" \
    --rows 0,1 --device cpu --out "$OUT/$REGIME/cams.png" \
    --title "CAMs, $REGIME regime, seed 0 (Table 4): one colour scale, ★ hit / ✕ miss"
  return 0
}

main "$@"
exit
