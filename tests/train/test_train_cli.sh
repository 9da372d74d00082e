#!/usr/bin/env bash
# medtrain train | eval end to end on a small synthetic pack (ResNet-18 at 64x64):
#   - 1 rank x batch 16 and 2 ranks x batch 8 log the same losses over 20 steps (1e-5) with
#     eval-mode BN, and over the first steps with SyncBN;
#   - 20 straight steps and 10 steps + kill -9 + --resume auto give bit-identical weights;
#   - the run directory holds config.yaml, provenance.json, log.jsonl, checkpoints (keep-K,
#     latest) and model/ (safetensors, config.json, model card); no planted PHI anywhere;
#   - eval writes metrics.json, predictions.csv and ROC data;
#   - bad inputs fail with clear messages on 2 ranks, without hanging: a corrupted checkpoint,
#     a checkpoint of another architecture, a changed config, another dataset, a label count that
#     differs from the pack, a NaN loss, a missing split, a batch that does not divide.
#   test_train_cli.sh MEDTRAIN MPIEXEC SRCDIR
set -u
medtrain=$1
mpiexec=$2
srcdir=$3
source "$(dirname "$0")/../lib.sh"

# ---- data: a small cohort, a pack, a 2-label pack made from the masks, a pack with no test split
cohort=$tmp/cohort
# A fixed site key, so that the patient-level split (and so every number below) is the same in
# every run of this test.
printf 'medtrain-test-site-key-01-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >"$tmp/site.key"
chmod 600 "$tmp/site.key"
run synth 0 "$tmp/synth.log" -- "$medtrain" synth --out "$cohort" --n 96 --size 128,128 --seed 3 || exit 1
run pack 0 "$tmp/pack.log" -- "$mpiexec" -n 2 "$medtrain" pack --dicom "$cohort/dicom" \
  --labels "$cohort/labels.csv" --size 64 --split 60,20,20 --key-file "$tmp/site.key" \
  --out "$tmp/pack.h5" || exit 1
run pack_no_test 0 "$tmp/pack_nt.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --labels "$cohort/labels.csv" --size 32 --split 80,20,0 --key-file "$tmp/site.key" \
  --out "$tmp/pack_nt.h5"
run pack_train_only 0 "$tmp/pack_to.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --labels "$cohort/labels.csv" --size 32 --split 100,0,0 --key-file "$tmp/site.key" \
  --out "$tmp/pack_to.h5"
{
  echo "["
  i=0
  for m in $(ls "$cohort/masks" | head -40); do
    [ $i -gt 0 ] && echo ","
    echo "{\"image_path\": \"$cohort/masks/$m\", \"case_id\": \"c$((i / 2))\", \"modality\": \"CR\", \"labels\": {\"A\": $((i % 2)), \"B\": $(((i / 3) % 2))}}"
    i=$((i + 1))
  done
  echo "]"
} >"$tmp/manifest.json"
run pack_two_labels 0 "$tmp/pack2.log" -- "$medtrain" pack --manifest "$tmp/manifest.json" \
  --size 32 --split 60,20,20 --key-file "$tmp/site.key" --out "$tmp/pack2.h5"

cat >"$tmp/job.yaml" <<EOF
task: classify
run:
  dir: $tmp/unused
  seed: 5
data:
  pack: $tmp/pack.h5
  augment: true
model:
  arch: resnet18
train:
  batch: 16
  steps: 20
  optimizer: sgd
  lr: 0.02
  warmup_steps: 3
  log_every: 1
  threads: 1
checkpoint:
  every: 10
  keep: 2
EOF
job=$tmp/job.yaml
train=("$medtrain" train "$job")
train2=("$mpiexec" -n 2 "$medtrain" train "$job")

# ---- 1 rank x 16 vs 2 ranks x 8 ---------------------------------------------------------------
# With eval-mode (frozen) BN the two are the same computation up to float summation order: the 20
# losses must agree within 1e-5 (measured ~1e-7 at 32x32 and lr 0.001; larger images or rates
# give more ReLU inputs within rounding of zero, and each flip adds a little). With SyncBN they agree as closely at first, but training-mode BN
# makes early training chaotic (a ReLU input within rounding of zero flips, and differences grow
# ~100x per step), so only the first step's loss (the forward with SyncBN) is held to 1e-5 there.
run train_1_rank 0 "$tmp/t1.log" -- "${train[@]}" run.dir="$tmp/r1"
run train_2_ranks 0 "$tmp/t2.log" -- "${train2[@]}" run.dir="$tmp/r2"
frozen=(model.freeze_bn=true train.lr=0.001 data.pack="$tmp/pack_to.h5" train.val_every=0)
run train_frozen_1_rank 0 "$tmp/f1.log" -- "${train[@]}" run.dir="$tmp/f1" "${frozen[@]}"
run train_frozen_2_ranks 0 "$tmp/f2.log" -- "${train2[@]}" run.dir="$tmp/f2" "${frozen[@]}"
compare_losses same_losses_1x16_2x8_frozen_bn "$tmp/f1" "$tmp/f2" 20
compare_losses same_first_loss_1x16_2x8_sync_bn "$tmp/r1" "$tmp/r2" 1
first=$(losses "$tmp/f1" | head -1)
last=$(losses "$tmp/f1" | tail -1)
if awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a)}'; then ok "frozen_bn_trains ($first -> $last)"; else
  bad frozen_bn_trains "loss $first -> $last"; fi

# ---- the run directory ------------------------------------------------------------------------
r=$tmp/r2
for f in config.yaml provenance.json log.jsonl model/model.safetensors model/config.json \
         model/README.md ckpt/latest ckpt/step_00000020/state.json ckpt/step_00000020/optim.safetensors; do
  if [ -e "$r/$f" ]; then ok "run_has_$f"; else bad "run_has_$f" "missing $r/$f"; fi
done
expect_in provenance_fields "$r/provenance.json" '"world_size":[[:space:]]*2'
expect_in provenance_completed "$r/provenance.json" '"status":[[:space:]]*"completed"'
expect_in provenance_digest "$r/provenance.json" '"config_digest":[[:space:]]*"[0-9a-f]{64}"'
expect_in provenance_commit "$r/provenance.json" '"git_commit"'
expect_in log_fields "$r/log.jsonl" '"grad_norm":.*"img_per_s":.*"data_wait_pct":.*"comm_wait_pct"'
expect_in log_validation "$r/log.jsonl" '"val_macro_auroc"'
expect_in card_warning "$r/model/README.md" 'human review'
expect_in card_prevalence "$r/model/README.md" '\| Effusion \|'
expect_in export_labels "$r/model/config.json" '"label_names":[[:space:]]*\["Effusion"'
if [ "$(ls -d "$r"/ckpt/step_* | wc -l)" = 2 ]; then ok keep_last_2; else bad keep_last_2 "$(ls "$r/ckpt")"; fi
if grep -rqa QZPHI "$tmp/r1" "$tmp/r2" "$tmp/t1.log" "$tmp/t2.log"; then
  bad no_phi_in_runs "planted PHI found"; else ok no_phi_in_runs; fi

# ---- kill -9 after step 13, resume from step 10: bit-identical ----------------------------------
MEDTRAIN_TEST_KILL_AFTER_STEP=13 run killed 137 "$tmp/k.log" -- "${train[@]}" run.dir="$tmp/rk"
if [ -d "$tmp/rk/ckpt/step_00000010" ] && [ ! -d "$tmp/rk/ckpt/step_00000020" ]; then
  ok killed_after_checkpoint_10; else bad killed_after_checkpoint_10 "$(ls "$tmp/rk/ckpt" 2>&1)"; fi
run resumed 0 "$tmp/k2.log" -- "${train[@]}" run.dir="$tmp/rk" --resume auto
expect_in resume_message "$tmp/k2.log" 'resumed from .*step_00000010 at step 10'
if cmp -s "$tmp/r1/ckpt/step_00000020/model.safetensors" "$tmp/rk/ckpt/step_00000020/model.safetensors" &&
   cmp -s "$tmp/r1/ckpt/step_00000020/optim.safetensors" "$tmp/rk/ckpt/step_00000020/optim.safetensors"; then
  ok resume_bit_identical
else
  bad resume_bit_identical "weights after 10 + kill + resume 10 differ from 20 straight steps"
fi
if [ "$(grep -c '"loss"' "$tmp/rk/log.jsonl")" = 20 ]; then ok resume_log_has_20_steps; else
  bad resume_log_has_20_steps "$(grep -c '"loss"' "$tmp/rk/log.jsonl") step lines"; fi
run fresh_start_refused 1 "$tmp/fresh.log" -- "${train[@]}" run.dir="$tmp/rk"
expect_in fresh_start_message "$tmp/fresh.log" 'already holds a run with checkpoints.*--resume auto'

# ---- eval --------------------------------------------------------------------------------------
run eval_2_ranks 0 "$tmp/e.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/r2" --split test --out "$tmp/ev"
expect_in eval_prints_macro "$tmp/e.log" 'macro AUROC = [0-9.]+'
for f in metrics.json predictions.csv roc/Effusion.csv; do
  if [ -f "$tmp/ev/$f" ]; then ok "eval_wrote_$f"; else bad "eval_wrote_$f" "missing"; fi
done
if command -v gnuplot >/dev/null 2>&1; then
  if [ -s "$tmp/ev/roc/Effusion.png" ]; then ok eval_roc_png; else bad eval_roc_png "no roc/Effusion.png"; fi
fi
expect_in eval_metrics_macro "$tmp/ev/metrics.json" '"macro_auroc":'
expect_in eval_metrics_labels "$tmp/ev/metrics.json" '"Effusion":'
expect_in eval_val_threshold "$tmp/ev/metrics.json" '"at_val_threshold"'
run eval_checkpoint 0 "$tmp/e2.log" -- "$medtrain" eval "$tmp/r2/ckpt/step_00000020" --out "$tmp/ev2"
expect_in eval_checkpoint_same "$tmp/e2.log" "$(grep -o 'macro AUROC = [0-9.]*' "$tmp/e.log" | head -1)"

# ---- bad inputs ---------------------------------------------------------------------------------
cp -r "$tmp/rk" "$tmp/rc"
printf 'X' | dd of="$tmp/rc/ckpt/step_00000020/optim.safetensors" bs=1 seek=100 conv=notrunc 2>/dev/null
run corrupted_checkpoint 1 "$tmp/bad1.log" -- "${train2[@]}" run.dir="$tmp/rc" --resume auto train.steps=30
expect_in corrupted_checkpoint_message "$tmp/bad1.log" 'optim.safetensors: checksum mismatch'
run other_architecture 1 "$tmp/bad2.log" -- "${train2[@]}" run.dir="$tmp/rk" --resume auto model.arch=resnet34
expect_in other_architecture_message "$tmp/bad2.log" 'checkpoint of a resnet18, but model.arch is resnet34'
run changed_config 1 "$tmp/bad3.log" -- "${train[@]}" run.dir="$tmp/rk" --resume auto train.lr=0.5
expect_in changed_config_message "$tmp/bad3.log" 'train.lr: 0.02 in the checkpoint, 0.5 now'
run other_dataset 1 "$tmp/bad4.log" -- "${train[@]}" run.dir="$tmp/rk" --resume auto data.pack="$tmp/pack_nt.h5"
expect_in other_dataset_message "$tmp/bad4.log" 'made from another dataset'
run label_count_eval 1 "$tmp/bad5.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/r2" --pack "$tmp/pack2.h5"
expect_in label_count_eval_message "$tmp/bad5.log" 'predicts 6 labels, but .*pack2.h5 has 2'
run label_count_pretrained 1 "$tmp/bad6.log" -- "${train[@]}" run.dir="$tmp/rp" data.pack="$tmp/pack2.h5" \
  model.pretrained="$tmp/r2/model/model.safetensors" train.batch=4 train.steps=2 train.warmup_steps=0
expect_in label_count_pretrained_message "$tmp/bad6.log" 'fc.weight.*\[6,512\]'
run reinit_head 0 "$tmp/ok6.log" -- "${train[@]}" run.dir="$tmp/rp2" data.pack="$tmp/pack2.h5" \
  model.pretrained="$tmp/r2/model/model.safetensors" model.reinit_head=true train.batch=4 train.steps=2 train.warmup_steps=0
run nan_loss 1 "$tmp/bad7.log" -- "${train2[@]}" run.dir="$tmp/rn" train.lr=1e30 train.warmup_steps=0 checkpoint.every=1
expect_in nan_loss_message "$tmp/bad7.log" 'step [0-9]+: the loss is .*Last good checkpoint: .*step_0000000[0-9]'
run no_val_split 0 "$tmp/noval.log" -- "${train[@]}" run.dir="$tmp/rv" data.pack="$tmp/pack_to.h5" \
  train.steps=2 train.warmup_steps=0
expect_in no_val_split_warns "$tmp/noval.log" 'has no validation images'
run missing_split 1 "$tmp/bad8.log" -- "$medtrain" eval "$tmp/r2" --pack "$tmp/pack_nt.h5" --split test
expect_in missing_split_message "$tmp/bad8.log" "has no 'test' images"
run batch_does_not_divide 1 "$tmp/bad9.log" -- "${train2[@]}" run.dir="$tmp/rb" train.batch=15
expect_in batch_message "$tmp/bad9.log" 'train.batch.*15 is not a multiple of accumulate \(1\) x ranks \(2\)'
run unknown_key 1 "$tmp/bad10.log" -- "${train[@]}" run.dir="$tmp/rb" train.lrr=0.1
expect_in unknown_key_message "$tmp/bad10.log" "unknown key 'train.lrr'.*train.lr"

finish
