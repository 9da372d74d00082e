#!/usr/bin/env bash
# medtrain train | eval for task: segment end to end on a small synthetic pack (U-Net at 32x32):
#   - 1 rank x batch 8 and 2 ranks x batch 4 log the same losses over 15 steps (1e-5) with
#     instance norm (per-image statistics: the same computation up to summation order), and the
#     same first loss with SyncBN batch norm;
#   - 12 straight steps and 6 steps + kill -9 + --resume auto give bit-identical weights;
#   - the loss falls and validation logs per-class Dice; the export's config.json names the
#     classes and the U-Net options; eval (2 ranks, run dir and checkpoint) writes metrics.json,
#     cases.csv and K overlay PNGs, with the same numbers;
#   - a sigmoid head and the dice/ce losses alone train; bilinear upsampling trains;
#   - multi-label masks (synth --multilabel-masks, pack --mask-layout multilabel: right lung, left
#     lung and heart, overlapping) train with a sigmoid head on 2 ranks (1 x 8 = 2 x 4 with
#     instance norm), validate and evaluate per structure (metrics, cases, overlays); a softmax
#     head on them fails naming model.head and the pack, and so does evaluating a softmax model;
#   - bad inputs fail with clear messages: a pack without masks, a classifier architecture, an
#     input size that is not a multiple of 2^depth (naming the nearest valid sizes), an unknown
#     --empty value, a model whose classes differ from the pack's.
#   test_segment_cli.sh MEDTRAIN MPIEXEC SRCDIR
set -u
medtrain=$1
mpiexec=$2
srcdir=$3
source "$(dirname "$0")/../lib.sh"

cohort=$tmp/cohort
printf 'medtrain-test-site-key-02-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >"$tmp/site.key"
chmod 600 "$tmp/site.key"
run synth 0 "$tmp/synth.log" -- "$medtrain" synth --out "$cohort" --n 64 --size 96,96 --seed 4 \
  --multilabel-masks || exit 1
run pack_masks 0 "$tmp/pack.log" -- "$mpiexec" -n 2 "$medtrain" pack --dicom "$cohort/dicom" \
  --masks "$cohort/masks" --mask-classes background,lung,heart --size 32 --split 70,15,15 \
  --key-file "$tmp/site.key" --out "$tmp/pack.h5" || exit 1
run pack_masks_train_only 0 "$tmp/pack_to.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --masks "$cohort/masks" --mask-classes background,lung,heart --size 32 --split 100,0,0 \
  --key-file "$tmp/site.key" --out "$tmp/pack_to.h5"
run pack_no_masks 0 "$tmp/pack_nm.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --labels "$cohort/labels.csv" --size 32 --key-file "$tmp/site.key" --out "$tmp/pack_nm.h5"
run pack_other_classes 0 "$tmp/pack_oc.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --masks "$cohort/masks" --mask-classes background,left,right --size 32 \
  --key-file "$tmp/site.key" --out "$tmp/pack_oc.h5"
run pack_multilabel 0 "$tmp/pack_ml.log" -- "$mpiexec" -n 2 "$medtrain" pack --dicom "$cohort/dicom" \
  --masks "$cohort/masks_ml" --mask-layout multilabel --mask-classes right_lung,left_lung,heart \
  --size 32 --split 70,15,15 --key-file "$tmp/site.key" --out "$tmp/pack_ml.h5"

cat >"$tmp/job.yaml" <<EOF
task: segment
run:
  dir: $tmp/unused
  seed: 5
data:
  pack: $tmp/pack.h5
  augment: true
model:
  arch: unet
  depth: 2
  channels: 8
train:
  batch: 8
  steps: 12
  optimizer: adamw
  lr: 0.003
  warmup_steps: 2
  log_every: 1
  threads: 1
checkpoint:
  every: 6
  keep: 2
EOF
train=("$medtrain" train "$tmp/job.yaml")
train2=("$mpiexec" -n 2 "$medtrain" train "$tmp/job.yaml")

# ---- 1 rank x 8 vs 2 ranks x 4 -------------------------------------------------------------------
inst=(model.norm=instance train.steps=15 data.pack="$tmp/pack_to.h5" checkpoint.every=100)
run train_instance_1_rank 0 "$tmp/i1.log" -- "${train[@]}" run.dir="$tmp/i1" "${inst[@]}"
run train_instance_2_ranks 0 "$tmp/i2.log" -- "${train2[@]}" run.dir="$tmp/i2" "${inst[@]}"
compare_losses same_losses_1x8_2x4_instance_norm "$tmp/i1" "$tmp/i2" 15
first=$(losses "$tmp/i1" | head -1)
last=$(losses "$tmp/i1" | tail -1)
if awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a * 0.9)}'; then ok "loss_falls ($first -> $last)"; else
  bad loss_falls "loss $first -> $last"; fi
run train_1_rank 0 "$tmp/t1.log" -- "${train[@]}" run.dir="$tmp/r1"
run train_2_ranks 0 "$tmp/t2.log" -- "${train2[@]}" run.dir="$tmp/r2"
compare_losses same_first_loss_1x8_2x4_sync_bn "$tmp/r1" "$tmp/r2" 1

# ---- the run directory --------------------------------------------------------------------------
r=$tmp/r2
expect_in log_validation_dice "$r/log.jsonl" '"val_dice_lung":[0-9.e-]+,"val_dice_heart":[0-9.e-]+'
expect_in log_mean_dice "$r/log.jsonl" '"val_mean_dice"'
expect_in export_classes "$r/model/config.json" '"class_names":[[:space:]]*\["background",[[:space:]]*"lung",[[:space:]]*"heart"\]'
expect_in export_task "$r/model/config.json" '"task":[[:space:]]*"segment"'
flat() { tr -d ' \t\n' <"$1" >"$1.flat"; } # pretty-printed JSON on one line
flat "$r/model/config.json"
expect_in export_unet_options "$r/model/config.json.flat" '"depth":2,"channels":8,"norm":"batch","upsample":"transpose"'
expect_in card_intended_use "$r/model/README.md" 'Segmentation of anatomical structures \(lung, heart\)'
expect_in card_warning "$r/model/README.md" 'human review'

# ---- kill -9 after step 8, resume from step 6: bit-identical --------------------------------------
MEDTRAIN_TEST_KILL_AFTER_STEP=8 run killed 137 "$tmp/k.log" -- "${train[@]}" run.dir="$tmp/rk"
run resumed 0 "$tmp/k2.log" -- "${train[@]}" run.dir="$tmp/rk" --resume auto
expect_in resume_message "$tmp/k2.log" 'resumed from .*step_00000006 at step 6'
if cmp -s "$tmp/r1/ckpt/step_00000012/model.safetensors" "$tmp/rk/ckpt/step_00000012/model.safetensors" &&
   cmp -s "$tmp/r1/ckpt/step_00000012/optim.safetensors" "$tmp/rk/ckpt/step_00000012/optim.safetensors"; then
  ok resume_bit_identical
else
  bad resume_bit_identical "weights after 6 + kill + resume 6 differ from 12 straight steps"
fi

# ---- eval -----------------------------------------------------------------------------------------
run eval_2_ranks 0 "$tmp/e.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/r2" --split test \
  --out "$tmp/ev" --overlays 3
expect_in eval_prints_mean_dice "$tmp/e.log" 'mean Dice = [0-9.]+'
for f in metrics.json cases.csv; do
  if [ -f "$tmp/ev/$f" ]; then ok "eval_wrote_$f"; else bad "eval_wrote_$f" "missing"; fi
done
n_png=$(ls "$tmp/ev/overlays" 2>/dev/null | grep -c '\.png$')
if [ "$n_png" = 3 ]; then ok eval_three_overlays; else bad eval_three_overlays "$n_png overlay PNGs"; fi
flat "$tmp/ev/metrics.json"
expect_in eval_metrics_classes "$tmp/ev/metrics.json.flat" '"classes":\{"lung":\{"dice":\{"mean":[0-9.e-]+,"n":[0-9]+\},"iou"'
expect_in eval_metrics_hd95 "$tmp/ev/metrics.json" '"mean_hd95_mm"'
expect_in eval_cases_header "$tmp/ev/cases.csv" '^index,case_id,dice_lung,iou_lung,hd95_px_lung,hd95_mm_lung,dice_heart'
n_test=$(($(wc -l <"$tmp/ev/cases.csv") - 1))
expect_in eval_counts_every_case "$tmp/e.log" "; $n_test images, split test"
if [ ! -e "$tmp/ev.tmp" ]; then ok eval_no_tmp_left; else bad eval_no_tmp_left "$tmp/ev.tmp remains"; fi
run eval_checkpoint 0 "$tmp/e2.log" -- "$medtrain" eval "$tmp/r2/ckpt/step_00000012" --out "$tmp/ev2" --overlays 0
expect_in eval_checkpoint_same "$tmp/e2.log" "$(grep -o 'mean Dice = [0-9.]*' "$tmp/e.log" | head -1)"
run eval_empty_one 0 "$tmp/e3.log" -- "$medtrain" eval "$tmp/r2" --out "$tmp/ev3" --empty one --overlays 0
expect_in eval_empty_one_recorded "$tmp/ev3/metrics.json" '"empty_truth":[[:space:]]*"one"'

# ---- heads, losses, upsampling ------------------------------------------------------------------
short=(train.steps=3 train.warmup_steps=0 checkpoint.every=100)
run sigmoid_head 0 "$tmp/s.log" -- "${train[@]}" run.dir="$tmp/rs" model.head=sigmoid "${short[@]}"
expect_in sigmoid_head_export "$tmp/rs/model/config.json" '"head":[[:space:]]*"sigmoid"'
run sigmoid_head_eval 0 "$tmp/se.log" -- "$medtrain" eval "$tmp/rs" --out "$tmp/sev" --overlays 1
expect_in sigmoid_head_eval_dice "$tmp/se.log" 'mean Dice = [0-9.]+'
run dice_only 0 "$tmp/d.log" -- "${train[@]}" run.dir="$tmp/rd" train.loss=dice "${short[@]}"
run ce_only 0 "$tmp/c.log" -- "${train[@]}" run.dir="$tmp/rc" train.loss=ce "${short[@]}"
run bilinear 0 "$tmp/b.log" -- "${train2[@]}" run.dir="$tmp/rb" model.upsample=bilinear "${short[@]}"
# 3 input channels: the grey image repeated (models pretrained on RGB), in training and eval
run three_channels 0 "$tmp/c3.log" -- "${train[@]}" run.dir="$tmp/r3" model.in_channels=3 "${short[@]}"
run three_channels_eval 0 "$tmp/c3e.log" -- "$medtrain" eval "$tmp/r3" --out "$tmp/ev3c" --overlays 0
expect_in three_channels_eval_dice "$tmp/c3e.log" 'mean Dice = [0-9.]+'

# ---- multi-label masks: a sigmoid output per structure --------------------------------------------
ml=(data.pack="$tmp/pack_ml.h5" model.head=sigmoid model.norm=instance train.steps=6
    train.warmup_steps=0 checkpoint.every=6)
run ml_train_1_rank 0 "$tmp/ml1.log" -- "${train[@]}" run.dir="$tmp/ml1" "${ml[@]}"
run ml_train_2_ranks 0 "$tmp/ml2.log" -- "${train2[@]}" run.dir="$tmp/ml2" "${ml[@]}"
compare_losses ml_same_losses_1x8_2x4 "$tmp/ml1" "$tmp/ml2" 6
expect_in ml_validation_dice_per_structure "$tmp/ml2/log.jsonl" '"val_dice_right_lung":[0-9.e-]+,"val_dice_left_lung":[0-9.e-]+,"val_dice_heart":[0-9.e-]+'
expect_in ml_export_classes "$tmp/ml2/model/config.json" '"class_names":[[:space:]]*\["right_lung",[[:space:]]*"left_lung",[[:space:]]*"heart"\]'
expect_in ml_export_layout "$tmp/ml2/model/config.json" '"mask_layout":[[:space:]]*"multilabel"'
expect_in ml_export_outputs "$tmp/ml2/model/config.json" '"num_outputs":[[:space:]]*3'
expect_in ml_card_structures "$tmp/ml2/model/README.md" 'Segmentation of anatomical structures \(right_lung, left_lung, heart\)'
run ml_eval_2_ranks 0 "$tmp/mle.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/ml2" --split test \
  --out "$tmp/mlev" --overlays 2
expect_in ml_eval_mean_dice "$tmp/mle.log" 'mean Dice = [0-9.]+'
expect_in ml_eval_table "$tmp/mle.log" '^heart +[0-9.]+ +[0-9.]+'
flat "$tmp/mlev/metrics.json"
expect_in ml_eval_metrics_structures "$tmp/mlev/metrics.json.flat" '"classes":\{"right_lung":\{"dice":\{"mean":[0-9.e-]+,"n":[0-9]+\}.*"left_lung":\{.*"heart":\{"dice"'
expect_in ml_eval_metrics_layout "$tmp/mlev/metrics.json.flat" '"mask_layout":"multilabel"'
expect_in ml_eval_cases_header "$tmp/mlev/cases.csv" '^index,case_id,dice_right_lung,iou_right_lung,hd95_px_right_lung,hd95_mm_right_lung,dice_left_lung,.*,hd95_mm_heart$'
n_png=$(ls "$tmp/mlev/overlays" 2>/dev/null | grep -c '\.png$')
if [ "$n_png" = 2 ]; then ok ml_eval_two_overlays; else bad ml_eval_two_overlays "$n_png overlay PNGs"; fi
run ml_eval_checkpoint 0 "$tmp/mle2.log" -- "$medtrain" eval "$tmp/ml2/ckpt/step_00000006" --split test --out "$tmp/mlev2" --overlays 0
expect_in ml_eval_checkpoint_same "$tmp/mle2.log" "$(grep -o 'mean Dice = [0-9.]*' "$tmp/mle.log" | head -1)"
run ml_softmax_head 1 "$tmp/mls.log" -- "${train2[@]}" run.dir="$tmp/mls" data.pack="$tmp/pack_ml.h5" model.head=softmax
expect_in ml_softmax_head_message "$tmp/mls.log" 'model.head: .*pack_ml.h5 has multi-label masks .*needs model.head: sigmoid, not softmax'
run ml_eval_softmax_model 1 "$tmp/mles.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/r2" --pack "$tmp/pack_ml.h5" --overlays 0
expect_in ml_eval_softmax_model_message "$tmp/mles.log" 'pack_ml.h5 has multi-label masks .*softmax head'

# one structure in a multi-label pack: a binary model whose export evaluates
run pack_one_structure 0 "$tmp/pack_one.log" -- "$medtrain" pack --dicom "$cohort/dicom" \
  --masks "$cohort/masks_ml" --mask-layout multilabel --mask-classes heart --size 32 \
  --split 70,15,15 --key-file "$tmp/site.key" --out "$tmp/pack_one.h5"
run one_structure_train 0 "$tmp/one.log" -- "${train[@]}" run.dir="$tmp/one" data.pack="$tmp/pack_one.h5" \
  model.head=sigmoid train.steps=2 train.warmup_steps=0 checkpoint.every=100
run one_structure_eval 0 "$tmp/onee.log" -- "$medtrain" eval "$tmp/one" --out "$tmp/oneev" --overlays 1
expect_in one_structure_eval_table "$tmp/onee.log" '^heart +[0-9.]+'

# ---- bad inputs -----------------------------------------------------------------------------------
run no_masks 1 "$tmp/bad1.log" -- "${train2[@]}" run.dir="$tmp/x1" data.pack="$tmp/pack_nm.h5"
expect_in no_masks_message "$tmp/bad1.log" 'pack_nm.h5: the pack has no masks; task segment needs them'
run classifier_arch 1 "$tmp/bad2.log" -- "${train[@]}" run.dir="$tmp/x2" model.arch=resnet18
expect_in classifier_arch_message "$tmp/bad2.log" 'model.arch.*task segment needs arch unet, not resnet18'
run size_not_multiple 1 "$tmp/bad3.log" -- "${train2[@]}" run.dir="$tmp/x3" data.size=30
expect_in size_not_multiple_message "$tmp/bad3.log" 'input of 30x30: a U-Net of depth 2 needs a height that is a multiple of 4 \(nearest valid: 28 or 32\)'
run empty_option 2 "$tmp/bad4.log" -- "$medtrain" eval "$tmp/r2" --empty maybe
expect_in empty_option_message "$tmp/bad4.log" 'eval: --empty ignore\|one, not maybe'
run other_classes 1 "$tmp/bad5.log" -- "$mpiexec" -n 2 "$medtrain" eval "$tmp/r2" --pack "$tmp/pack_oc.h5"
expect_in other_classes_message "$tmp/bad5.log" "class 1 is 'lung' in the model but 'left' in"

finish
