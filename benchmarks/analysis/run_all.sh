#!/usr/bin/env bash
# The paper's analyses (Fig 1, Table 1, Fig 3, Fig 4, Fig 5, Fig 6, Table 4) on the Fashion-MNIST mosaics,
# with the project's fast CPU settings (configs/fashion/*.yaml: small CNN, 4800 train / 1200 val / 2000 test
# mosaics, 8 epochs, Adam 1e-3, batch 32, Δrel 2). Runs go to runs/analysis/ (not committed); the report,
# its PNGs and the numbers (results/*.json, results/summary.md) go to benchmarks/analysis/.
#
#   bash benchmarks/analysis/run_all.sh              # everything: ~35 training runs, 1-1.5 h on 2 busy CPU cores
#   bash benchmarks/analysis/run_all.sh analyze report           # only some steps, in this order:
#        methods mem delta frac seeds analyze report
#
# Finished runs (summary.json present) are reused, so an interrupted script continues where it stopped.
set -euo pipefail

main() {  # (everything inside a function: bash parses it whole, so editing this file mid-run is safe)
  cd "$(dirname "$0")/../.."
  PY=${PY:-.venv/bin/python}
  OUT=${OUT:-runs/analysis}
  BENCH=benchmarks/analysis
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  WSML=("$PY" -m wsml.cli)
  CB='callbacks=[memorization,modification]'
  local steps=("$@")
  [ ${#steps[@]} -eq 0 ] && steps=(methods mem delta frac seeds analyze report)
  for step in "${steps[@]}"; do
    echo "=== $step"
    "step_$step"
  done
}

train() {  # train NAME CONFIG [overrides...]: skipped when the run already finished
  local name=$1; shift
  if [ -f "$OUT/$name/summary.json" ]; then echo "reusing $OUT/$name"; return; fi
  "${WSML[@]}" train "$@" "$CB" run.out="$OUT" run.name="$name" run.overwrite=true run.quiet=true
}

step_methods() {  # Naive AN and the three LL methods (Fig 3, Fig 4, Table 4); LL-Cp also at Δrel 1
  for m in an ll-r ll-ct ll-cp; do train "$m" "configs/fashion/$m.yaml"; done
  train ll-cp-d1 configs/fashion/ll-cp.yaml loss.delta_rel=1
}

step_mem() {  # Fig 1 / Table 1: Naive AN for 30 epochs (memorizes the false negatives); also on 1000 mosaics
  train mem-an configs/fashion/an.yaml train.epochs=30
  train mem-an-1k configs/fashion/an.yaml train.epochs=30 data.path=data/fashion-mosaic-1k \
    "data.options={num_train: 1000, num_test: 2000}"
}

step_delta() {  # Fig 5: LL-Ct test mAP vs Δrel
  "${WSML[@]}" analyze sweep configs/fashion/ll-ct.yaml --param loss.delta_rel --values 0.5,1,2,4,8 \
    --method LL-Ct:loss.name=ll-ct --out "$OUT/sweep-delta" --xlabel "Δrel (% per epoch)" run.quiet=true
}

step_frac() {  # Fig 6: test mAP vs fraction of training images, Naive AN / LL-Ct / full labels
  "${WSML[@]}" analyze sweep configs/fashion/an.yaml --param data.options.train_frac --values 0.1,0.25,0.5,1.0 \
    --method "Naive AN:loss.name=an" --method "LL-Ct:loss.name=ll-ct,loss.delta_rel=2" \
    --method "Full label:loss.name=full,data.options.num_pos=-1,data.options.num_neg=-1" \
    --out "$OUT/sweep-frac" --xlabel "fraction of training images" run.quiet=true
}

step_seeds() {  # two more training seeds of the four methods: mean ± sd of mAP and of the Pointing Game
  for seed in 1 2; do
    for m in an ll-r ll-ct ll-cp; do train "$m-s$seed" "configs/fashion/$m.yaml" train.seed=$seed; done
  done
}

step_analyze() {  # Table 4 (Pointing Game, CAMs), Fig 4 (precision), Fig 3 (qualitative), Fig 1 / Table 1
  mkdir -p "$BENCH/results"
  for m in an ll-r ll-ct ll-cp; do
    for run in "$m" "$m-s1" "$m-s2"; do
      "${WSML[@]}" analyze pointing "$OUT/$run" --device cpu --overlays 0
      cp "$OUT/$run/analysis/pointing_game.json" "$BENCH/results/pointing_game_$run.json"
    done
  done
  "${WSML[@]}" analyze cams "$OUT/an" "$OUT/ll-r" "$OUT/ll-ct" "$OUT/ll-cp" --names "Naive AN,LL-R,LL-Ct,LL-Cp" \
    --rows 0,1 --device cpu --out "$BENCH/cams.png"
  "${WSML[@]}" analyze precision "$OUT/ll-r" "$OUT/ll-ct" "$OUT/ll-cp" "$OUT/ll-cp-d1" --out "$BENCH/precision.png"
  "${WSML[@]}" analyze qualitative "$OUT/ll-ct" --out "$BENCH/qualitative_ll-ct.png"
  for m in mem-an mem-an-1k an ll-ct; do
    "${WSML[@]}" analyze memorization "$OUT/$m"
    cp "$OUT/$m/analysis/memorization.json" "$BENCH/results/memorization_$m.json"
  done
  cp "$OUT/mem-an/analysis/memorization.png" "$BENCH/memorization_mem-an.png"
  cp "$OUT/mem-an-1k/analysis/memorization.png" "$BENCH/memorization_mem-an-1k.png"
  cp "$OUT/sweep-delta/sweep.json" "$BENCH/results/sweep_delta.json"
  cp "$OUT/sweep-delta/sweep.png" "$BENCH/sweep_delta.png"
  cp "$OUT/sweep-frac/sweep.json" "$BENCH/results/sweep_frac.json"
  cp "$OUT/sweep-frac/sweep.png" "$BENCH/sweep_frac.png"
  "$PY" "$BENCH/summarize.py" "$OUT" > "$BENCH/results/summary.md"
}

step_report() {
  "${WSML[@]}" report "$OUT/mem-an" "$OUT/an" "$OUT/ll-r" "$OUT/ll-ct" "$OUT/ll-cp" "$OUT/ll-cp-d1" \
    "$OUT/sweep-delta" "$OUT/sweep-frac" --out "$BENCH/report.md" --title "wsml analyses on the Fashion-MNIST mosaics"
}

main "$@"
exit
