#!/usr/bin/env bash
# Trains, evaluates and exports the shipped models (models/digits.nsp, models/emoji.nsp, and
# the personalized digits packs models/digits-text.nsp and models/digits-fashion.nsp)
# from data fetched through the package registries. The numbers in docs/MODELS.md come from
# this script's commands. Steps finished earlier are skipped (runs resume where they stopped).
# usage: scripts/train-models.sh [digits|digits-text|digits-fashion|emoji|emoji-more|emoji-wide|emoji-vq-long|emoji-sub50|emoji-long|emoji-v2|emoji-v2-balance|emoji-balanced-more|emoji-text-noise|emoji-text-noise-clean|emoji-coarse|emoji-coarse-even|emoji-even-more|emoji-deeper|emoji-deeper-more|emoji-cuda|emoji-soup|emoji-low-lr|emoji-swa|tokenizer-noise|emoji-breakdown|emoji-pretrained|emoji-swa-images|emoji-judge|emoji-judge-styles|emoji-vq-decoder|emoji-vq-gan|emoji-v1|all]
#   env: DEVICE=cpu|cuda|vulkan, RUNS=dir, NATIVE_TRAINER=binary (skip the build),
#        EMOJI_JUDGE=classifier (default: the committed models/judges/emoji-groups.safetensors)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
what="${1:-all}"
DEVICE="${DEVICE:-cpu}"
RUNS="${RUNS:-$NEXTSCALE_CACHE/runs}"
# NATIVE_TRAINER: a copied, frozen binary for long runs (so rebuilding the tree does not touch it).
if [ -n "${NATIVE_TRAINER:-}" ]; then B="$NATIVE_TRAINER"; else
  cargo build --release --locked -p native-trainer
  B="$CARGO_TARGET_DIR/release/native-trainer"
fi
DATA="$(bash scripts/data/fetch.sh mnist)"
bash scripts/data/fetch.sh emoji-flat >/dev/null
mkdir -p "$RUNS" models docs/models
# Shipped sampling settings (docs/MODELS.md).
SAMPLING=(--cfg 3 --top-k 50 --top-p 0.9)
PACK_ARGS=()
# The judge of the emoji packs (docs/MODELS.md, "How quality is measured"), committed so that
# every figure repeats exactly: training it again gives a slightly different judge on another
# machine. `emoji-judge` trains one by its recorded command.
EMOJI_JUDGE="${EMOJI_JUDGE:-$ROOT/models/judges/emoji-groups.safetensors}"
# How emoji packs are compared (docs/MODELS.md): the judge over seeds 0-2, on the held-out
# captions and on 300 training captions.
judge_emoji() {
  local E="$DATA/emoji-flat"
  for seed in 0 1 2; do
    "$B" evaluate --pack "$1" --classifier "$EMOJI_JUDGE" --real "$E/test" \
      --reference "$E/train" "${SAMPLING[@]}" --rank --seed "$seed"
    "$B" evaluate --pack "$1" --classifier "$EMOJI_JUDGE" --real "$E/train" \
      --limit 300 "${SAMPLING[@]}" --rank --seed "$seed"
  done
}
# The shipped emoji pack's export: q8 model, q4 text encoder fitted to the training captions
# with GPTQ (its embedding cosine to f32 over every training caption is printed), and the
# settings the demo page and the CLI default to. Args: VAR VQ-VAE OUT [export args].
pack_emoji() {
  local E="$DATA/emoji-flat"
  "$B" export --var "$1" --vae "$2" --text-encoder "$MINILM" \
    --quant q8 --text-quant q4 --report-prompts "$E/train-captions/metadata.jsonl" \
    --text-calibration "$E/train-captions/metadata.jsonl" \
    "${SAMPLING[@]}" --default-prompt "grinning face" --out "$3" "${@:4}"
}
# The export of the deeper VARs (docs/EMOJI-LOG.md, "More depth"): every VAR matrix fitted with
# GPTQ to 256 sequences the model samples itself, and the AdaLN matrices at q4.
FITTED=(--var-calibration 256 --keep '^blocks\.[0-9]+\.ada_lin\.1\.weight=q4')
# The 16 everyday prompts of docs/MODELS.md, four samples each. Args: PACK OUT.
everyday_grid() {
  local everyday=() p
  for p in "red apple" rocket "dog face" pizza sun snowman "green heart" "flag: Japan" "cat face" \
    car "deciduous tree" fire star ghost guitar hamburger; do everyday+=(--prompt "$p"); done
  "$B" sample --pack "$1" "${everyday[@]}" --n 4 --cols 4 --seed 0 --out "$2"
}
# Tokenizes once: `prepare` into OUT with the given args, then OUT/done marks it finished (a
# rerun skips it). Args: OUT [prepare args].
prepare_once() {
  local out="$1"
  shift
  [ -e "$out/done" ] || { "$B" prepare "$@" --out "$out" && touch "$out/done"; }
}
# A judge of the emoji packs: a classifier of the nine emoji groups, trained on the training
# emoji (kept when present). Args: STEPS OUT.
emoji_classifier() {
  local E="$DATA/emoji-flat"
  [ -s "$2" ] || "$B" train-classifier --data "$E/groups/train" --test "$E/groups/test" \
    --size 64 --steps "$1" --batch-size 32 --flip --out "$2" --device "$DEVICE"
}
# A VAR of the emoji chain trained on from INIT: STEPS steps from a fresh warm-up to LR, then
# linear decay; a checkpoint every 100 steps. Args: TOKENS VAE INIT OUT STEPS LR [train-var args].
fork_emoji_var() {
  local tokens="$1" vae="$2" init="$3" out="$4" steps="$5" lr="$6"
  shift 6
  "$B" train-var --tokens "$tokens" --vae "$vae" --out "$out" --preset emoji --init "$init" \
    --steps "$steps" --set train.lr="$lr" --set train.ckpt_every=100 --set train.eval_every=1000 \
    --set train.sample_every=10000 --text-encoder "$MINILM" --device "$DEVICE" "$@"
}
# A VAR packed with a VQ-VAE as $RUNS/emoji-flat/NAME.nsp, judged, and its everyday grid drawn
# beside it. Args: NAME VAR VAE [export args].
pack_and_judge() {
  local P="$RUNS/emoji-flat/$1"
  pack_emoji "$2" "$3" "$P.nsp" "${@:4}"
  judge_emoji "$P.nsp"
  everyday_grid "$P.nsp" "$P-grid16.png"
}
# Forks of the emoji VAR on the tokens of the emoji-tn0 pack's VQ-VAE (emoji-coarse makes
# both), FORK_STEPS steps each (default 2,000) from a fresh warm-up to a peak learning rate,
# side by side, one thread each; then, unless JUDGE=0, each packed with that VQ-VAE and
# judged. A failed fork stops the script. Args: quintuples NAME INIT BALANCE DEEPEN LR (the run is
# $RUNS/emoji-flat/var-NAME, the pack emoji-NAME; DEEPEN blocks are added on top of INIT's,
# 0 for none; LR the peak). PACK_ARGS: more export args.
emoji_v3_forks() {
  local R="$RUNS/emoji-flat" pids=() names=() p n deepen
  local P="$R/emoji-tn0.nsp"
  while [ "$#" -ge 5 ]; do
    deepen=()
    [ "$4" = 0 ] || deepen=(--deepen "$4")
    RAYON_NUM_THREADS=1 fork_emoji_var "$R/tokens-v3" "$P" "$2" "$R/var-$1" "${FORK_STEPS:-2000}" "$5" \
      --set train.scale_balance="$3" "${deepen[@]}" &
    pids+=($!)
    names+=("$1")
    shift 5
  done
  for p in "${pids[@]}"; do wait "$p"; done
  [ "${JUDGE:-1}" = 1 ] || return 0
  for n in "${names[@]}"; do pack_and_judge "emoji-$n" "$R/var-$n/var.safetensors" "$P" "${PACK_ARGS[@]}"; done
}

if [ "$what" = digits ] || [ "$what" = all ]; then
  R="$RUNS/digits"
  M="$DATA/mnist"
  "$B" train-vqvae --data "$M/train-images-idx3-ubyte" --out "$R/vq" --preset digits --steps 700 --device "$DEVICE"
  prepare_once "$R/tokens" --data "$M/train-images-idx3-ubyte" --vae "$R/vq/vqvae.safetensors" --device "$DEVICE"
  "$B" train-var --tokens "$R/tokens" --vae "$R/vq/vqvae.safetensors" --out "$R/var" --preset digits --device "$DEVICE"
  [ -s "$R/classifier.safetensors" ] || "$B" train-classifier --data "$M/train-images-idx3-ubyte" \
    --test "$M/t10k-images-idx3-ubyte" --size 32 --steps 800 --out "$R/classifier.safetensors" --device "$DEVICE"
  "$B" export --var "$R/var/var.safetensors" --vae "$R/vq/vqvae.safetensors" --quant q8 "${SAMPLING[@]}" \
    --default-class 3 --out models/digits.nsp
  "$B" eval-vqvae --vae "$R/vq/vqvae.safetensors" --data "$M/t10k-images-idx3-ubyte" --grid docs/models/digits-recon.png
  "$B" evaluate --pack models/digits.nsp --classifier "$R/classifier.safetensors" \
    --real "$M/t10k-images-idx3-ubyte" --reference "$M/train-images-idx3-ubyte" --per-class 100 "${SAMPLING[@]}" \
    --grid docs/models/digits-samples.png
  # Editing: complete 1,000 real test digits from their left (top) half, with and without the class,
  # at the settings MODELS' table was measured with (evaluate's defaults before it took the pack's).
  EDIT_SAMPLING=(--cfg 4 --top-k 900 --top-p 0.96)
  for half in left top; do
    "$B" evaluate --pack models/digits.nsp --classifier "$R/classifier.safetensors" \
      --real "$M/t10k-images-idx3-ubyte" --keep-half "$half" --limit 1000 "${EDIT_SAMPLING[@]}"
  done
  "$B" evaluate --pack models/digits.nsp --classifier "$R/classifier.safetensors" \
    --real "$M/t10k-images-idx3-ubyte" --keep-half left --unconditional --limit 1000 "${EDIT_SAMPLING[@]}"
fi

if [ "$what" = digits-text ] || [ "$what" = all ]; then
  # Prompts for the class-only digits model: a text adapter on the frozen pack, trained on
  # 20,000 MNIST digits captioned with 22 phrasings per digit; judged on test digits with 10
  # phrasings it never saw (scripts/data/digits-text.mjs).
  R="$RUNS/digits-text"
  T="$(bash scripts/data/fetch.sh digits-text)/digits-text"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  mkdir -p "$R"
  prepare_once "$R/tokens" --data "$T/train" --vae models/digits.nsp --device "$DEVICE"
  "$B" train-adapter --var models/digits.nsp --vae models/digits.nsp --tokens "$R/tokens" \
    --text-encoder "$MINILM" --out "$R/adapter" --preset digits --stop-after 1000 --device "$DEVICE"
  "$B" export --var models/digits.nsp --vae models/digits.nsp --adapter "$R/adapter/adapter.safetensors" \
    --text-encoder "$MINILM" --quant q8 --text-quant q4 --report-prompts "$T/train/metadata.jsonl" \
    "${SAMPLING[@]}" --default-prompt "a handwritten seven" --out models/digits-text.nsp
  for split in test-heldout test-seen; do
    "$B" evaluate --pack models/digits-text.nsp --classifier "$RUNS/digits/classifier.safetensors" \
      --real "$T/$split" --label-field digit "${SAMPLING[@]}" --grid "docs/models/digits-text-$split.png"
  done
fi

if [ "$what" = digits-fashion ] || [ "$what" = all ]; then
  # LoRA: the frozen digits model learns Fashion-MNIST's ten classes as classes 10..19.
  R="$RUNS/digits-fashion"
  F="$(bash scripts/data/fetch.sh fashion)/fashion-mnist"
  mkdir -p "$R"
  prepare_once "$R/tokens" --data "$F/train-images-idx3-ubyte.gz" --vae models/digits.nsp \
    --limit 15000 --device "$DEVICE"
  [ -s "$R/classifier.safetensors" ] || "$B" train-classifier --data "$F/train-images-idx3-ubyte.gz" \
    --test "$F/t10k-images-idx3-ubyte.gz" --size 32 --steps 800 --out "$R/classifier.safetensors" --device "$DEVICE"
  # 15,000 real digits are replayed beside the new classes, so the updates keep the digits.
  prepare_once "$R/replay-tokens" --data "$DATA/mnist/train-images-idx3-ubyte" \
    --vae models/digits.nsp --limit 15000 --device "$DEVICE"
  "$B" train-lora --var models/digits.nsp --vae models/digits.nsp --tokens "$R/tokens" --replay "$R/replay-tokens" \
    --out "$R/lora" --preset digits --device "$DEVICE"
  "$B" export --var models/digits.nsp --vae models/digits.nsp --lora "$R/lora/lora.safetensors" --quant q8 \
    --class-names scripts/data/digits-fashion-classes.txt "${SAMPLING[@]}" --default-class 17 \
    --out models/digits-fashion.nsp
  # What it learned (classes 10..19, the Fashion-MNIST judge) and what it kept (0..9, the digits judge).
  "$B" evaluate --pack models/digits-fashion.nsp --classifier "$R/classifier.safetensors" \
    --real "$F/t10k-images-idx3-ubyte.gz" --first-class 10 "${SAMPLING[@]}" --grid docs/models/digits-fashion-new.png
  "$B" evaluate --pack models/digits-fashion.nsp --classifier "$RUNS/digits/classifier.safetensors" \
    --real "$DATA/mnist/t10k-images-idx3-ubyte" "${SAMPLING[@]}" --first-class 0 --grid docs/models/digits-fashion-old.png
  "$B" eval-vqvae --vae models/digits.nsp --data "$F/t10k-images-idx3-ubyte.gz" --grid docs/models/digits-vqvae-fashion-recon.png
fi

if [ "$what" = emoji-v1 ]; then
  # The emoji pack shipped until 2026-12-03 (git 9f74435:models/emoji.nsp), rebuilt into the
  # run folder. Text-to-image emoji on flat Noto art (scripts/data/emoji-flat.mjs). The VQ-VAE is
  # fine-tuned from the VQ-VAE of the first shipped emoji model (3D art, same architecture),
  # which starts it at 18 dB on flat emoji instead of noise.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  mkdir -p "$R"
  [ -s "$R/emoji-3d.nsp" ] || git -C "$ROOT" show 4d7ed33:models/emoji.nsp > "$R/emoji-3d.nsp"
  # The shipped VQ-VAE is step 700 of the 900-step schedule (stopped there for CPU time).
  "$B" train-vqvae --data "$E/train" --out "$R/vq" --preset emoji --init "$R/emoji-3d.nsp" --stop-after 700 --device "$DEVICE"
  # The VAR learns every caption of every training emoji (label, short names, keywords).
  prepare_once "$R/tokens" --data "$E/train-captions" --vae "$R/vq/vqvae.safetensors" --device "$DEVICE"
  "$B" train-var --tokens "$R/tokens" --vae "$R/vq/vqvae.safetensors" --out "$R/var" --preset emoji \
    --text-encoder "$MINILM" --device "$DEVICE"
  # The judge of that day (its row in docs/EMOJI-LOG.md); packs are now judged with the committed one.
  emoji_classifier 800 "$R/judge-v1.safetensors"
  pack_emoji "$R/var/var.safetensors" "$R/vq/vqvae.safetensors" "$R/emoji-v1-rebuilt.nsp"
  "$B" eval-vqvae --vae "$R/vq/vqvae.safetensors" --data "$E/test"
fi

if [ "$what" = emoji ] || [ "$what" = all ]; then
  # The shipped emoji model (since 2026-12-03, docs/MODELS.md): the emoji-v2 chain (a VQ-VAE
  # trained 5,000 steps further, its tokens, a depth-4 width-128 VAR) stopped at step 14,200,
  # then that VAR trained 2,000 more steps with every scale weighing the same in the loss
  # (train.scale_balance = 1), so that it learns the coarse layout its prompts name, and then
  # 3,000 more steps the same way from a fresh warm-up (emoji-balanced-more), and 2,000 more
  # again (the no-noise control of emoji-text-noise); the VQ-VAE's decoder fine-tuned alone
  # (emoji-vq-decoder), which leaves every token as it was; then 2,000 more VAR steps from
  # that pack's q8 weights (emoji-coarse at balance 1), and 2,000 more the same way
  # (emoji-coarse-even, its control); then two blocks added on top, each starting as the
  # identity, and 2,000 more steps (emoji-deeper, depth 6), and 2,000 more again from a fresh
  # warm-up to 1e-3 (emoji-deeper-more), and 528 more at batch 64 (emoji-cuda: measured on an
  # H200; on the CPU it is the same command, slower); then two more rounds from that VAR on the
  # CPU, side by side (2,000 steps at batch 16 and 528 at batch 64, one thread each), and the
  # mean of the three (emoji-soup); then the same again from that mean at half the steps
  # (1,000 and 264), and the mean of those three; then from that mean 1,000 more steps on the
  # CPU and three GPU forks (emoji-cuda), and the mean of those four and their start, packed
  # with the FITTED export.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  NATIVE_TRAINER="$B" STOP_AFTER=14200 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-v2
  NATIVE_TRAINER="$B" BALANCES=1 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-v2-balance
  NATIVE_TRAINER="$B" JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-balanced-more
  NATIVE_TRAINER="$B" NOISES=0 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-text-noise
  NATIVE_TRAINER="$B" bash "$ROOT/scripts/train-models.sh" emoji-vq-decoder
  # The control's pack, then 2,000 more steps from its q8 weights (emoji-coarse, balance 1).
  NATIVE_TRAINER="$B" BALANCES=1 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-coarse
  NATIVE_TRAINER="$B" FROMS=1 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-coarse-even
  NATIVE_TRAINER="$B" DEPTHS=2 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-deeper
  NATIVE_TRAINER="$B" LRS=1e-3 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-deeper-more
  NATIVE_TRAINER="$B" CUDA_BATCH=64 CUDA_LR=1e-3 JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-cuda
  # Two rounds from FROM side by side, then the mean of FROM and both (var-TO-soup3). A failed
  # round stops the chain (the other one runs on to its end, and a rerun resumes both).
  # Args: FROM TO STEPS_B16 STEPS_B64.
  soup_round() {
    NATIVE_TRAINER="$B" FROM="$1" TO="$2-d6" LRS=1e-3 FORK_STEPS="$3" JUDGE=0 RAYON_NUM_THREADS=1 \
      bash "$ROOT/scripts/train-models.sh" emoji-deeper-more &
    local round_a=$!
    NATIVE_TRAINER="$B" FROM="$1" TO="$2-d6-b64" CUDA_STEPS="$4" CUDA_BATCH=64 CUDA_LR=1e-3 \
      JUDGE=0 RAYON_NUM_THREADS=1 bash "$ROOT/scripts/train-models.sh" emoji-cuda &
    local round_b=$!
    wait "$round_a"
    wait "$round_b"
    NATIVE_TRAINER="$B" SOUP="$1 $2-d6-lr1e-3 $2-d6-b64" TO="$2-soup3" JUDGE=0 \
      bash "$ROOT/scripts/train-models.sh" emoji-soup
  }
  soup_round v7-d6-cuda-b64 v8 2000 528
  soup_round v8-soup3 v9 1000 264
  # The third round (docs/EMOJI-LOG.md, "A third soup"): a CPU round at batch 16 (as in
  # soup_round) and three GPU forks (the H200 lease of 2026-12-04, evening: FORKS="b64:64:1e-3
  # b128:128:1e-3 b64lo:64:5e-4", the b128 fork again alone), then the mean of the five.
  # Hours here on the CPU; minutes with DEVICE=cuda.
  NATIVE_TRAINER="$B" FROM=v9-soup3 TO=v10-d6 LRS=1e-3 FORK_STEPS=1000 JUDGE=0 \
    bash "$ROOT/scripts/train-models.sh" emoji-deeper-more
  for fork in b64:64:1e-3:572 b64lo:64:5e-4:568 b128:128:1e-3:458; do
    IFS=: read -r name batch lr steps <<<"$fork"
    NATIVE_TRAINER="$B" FROM=v9-soup3 TO="v10-gpu-$name" CUDA_BATCH="$batch" CUDA_LR="$lr" \
      CUDA_STEPS="$steps" JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-cuda
  done
  NATIVE_TRAINER="$B" SOUP="v9-soup3 v10-d6-lr1e-3 v10-gpu-b64 v10-gpu-b64lo v10-gpu-b128" TO=v10-soup5 \
    JUDGE=0 bash "$ROOT/scripts/train-models.sh" emoji-soup
  pack_emoji "$R/var-v10-soup5/var.safetensors" "$R/emoji-tn0.nsp" models/emoji.nsp "${FITTED[@]}"
  "$B" eval-vqvae --vae "$R/vq2-dec/vqvae.safetensors" --data "$E/test" --grid docs/models/emoji-recon-v2.png
  "$B" evaluate --pack models/emoji.nsp --classifier "$EMOJI_JUDGE" --real "$E/test" \
    --reference "$E/train" "${SAMPLING[@]}" --rank --grid docs/models/emoji-samples-test-prompts.png
  "$B" evaluate --pack models/emoji.nsp --classifier "$EMOJI_JUDGE" --real "$E/train" \
    --limit 300 "${SAMPLING[@]}" --rank --grid docs/models/emoji-samples-train-prompts.png
  everyday_grid models/emoji.nsp docs/models/emoji-grid16.png
  python3 scripts/emoji-prefix-grid.py "$B" "$R/var-v2-ft-sb1/var.safetensors" "$R/vq2/vqvae.safetensors" \
    "$MINILM" "$E/train" docs/models/emoji-prefix-balanced.png
fi

if [ "$what" = emoji-more ]; then
  # An experiment, not shipped (docs/EMOJI-LOG.md): 2,000 more VAR steps from the shipped step
  # 2,400 at a lower peak rate. (The measured run was started with --steps 2800 and resumed at
  # step 300 with --steps 2000; the rate differs by under 2 % over those first 300 steps.)
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  "$B" train-var --tokens "$R/tokens" --vae "$R/vq/vqvae.safetensors" --out "$R/var2" --preset emoji \
    --init "$R/var/var.safetensors" --text-encoder "$MINILM" --steps 2000 \
    --set train.lr=0.001 --set train.warmup_steps=50 --device "$DEVICE"
fi

if [ "$what" = emoji-vq-long ]; then
  # In progress, not shipped (docs/EMOJI-LOG.md): the shipped emoji VQ-VAE trained 3,000 more steps
  # with the faster convolution kernels, toward the 26 dB the issue asks for.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  "$B" train-vqvae --data "$E/train" --out "$R/vq-long" --preset emoji --init "$R/vq/vqvae.safetensors" \
    --steps 3000 --set train.lr=1e-3 --set train.eval_every=250 --set train.sample_every=500 \
    --set train.ckpt_every=50 --device "$DEVICE"
  "$B" eval-vqvae --vae "$R/vq-long/vqvae.safetensors" --data "$E/test" --grid docs/models/emoji-recon-vq-long.png
  # Its tokens, and the shipped VAR trained further on them (3,000 steps, peak lr 1e-3), packed.
  prepare_once "$R/tokens2" --data "$E/train-captions" --vae "$R/vq-long/vqvae.safetensors" --device "$DEVICE"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  "$B" train-var --tokens "$R/tokens2" --vae "$R/vq-long/vqvae.safetensors" --out "$R/var-vq2" --preset emoji \
    --init "$R/var/var.safetensors" --text-encoder "$MINILM" --steps 3000 \
    --set train.lr=0.001 --set train.warmup_steps=50 --device "$DEVICE"
  "$B" export --var "$R/var-vq2/var.safetensors" --vae "$R/vq-long/vqvae.safetensors" --text-encoder "$MINILM" \
    --quant q8 --text-quant q4 --report-prompts "$E/train-captions/metadata.jsonl" \
    "${SAMPLING[@]}" --default-prompt "grinning face" --out "$R/emoji-vq2.nsp"
fi

if [ "$what" = emoji-long ]; then
  # Judged, not shipped (docs/EMOJI-LOG.md): the VAR of emoji-vq-long trained for many more passes
  # over all captions (9,000 steps, about 33 passes; hours on two cores, minutes on a GPU).
  # Resumable: rerun the same command. Then the pack (GPTQ text encoder) and the judge.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  "$B" train-var --tokens "$R/tokens2" --vae "$R/vq-long/vqvae.safetensors" --out "$R/var-vq2-long" --preset emoji \
    --init "$R/var-vq2/var.safetensors" --text-encoder "$MINILM" --steps 9000 --set train.lr=0.001 \
    --set train.warmup_steps=50 --set train.ckpt_every=100 --set train.eval_every=1000 \
    --set train.sample_every=2000 --device "$DEVICE"
  pack_emoji "$R/var-vq2-long/var.safetensors" "$R/vq-long/vqvae.safetensors" "$R/emoji-long.nsp"
  judge_emoji "$R/emoji-long.nsp"
fi

if [ "$what" = emoji-sub50 ]; then
  # A diagnostic, not shipped (docs/EMOJI-LOG.md): the VAR of emoji-vq-long trained 600 more steps
  # on 50 emoji only (136 captions, each seen about 70 times), then judged on those 50.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  S="$DATA/emoji-sub50"
  W="$RUNS/emoji-sub50"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  [ -d "$S" ] || python3 scripts/data/emoji-subset.py "$E" "$S" 50 0
  mkdir -p "$W"
  prepare_once "$W/tokens" --data "$S/train-captions" --vae "$R/vq-long/vqvae.safetensors" --device "$DEVICE"
  "$B" train-var --tokens "$W/tokens" --vae "$R/vq-long/vqvae.safetensors" --out "$W/var" --preset emoji \
    --init "$R/var-vq2/var.safetensors" --text-encoder "$MINILM" --steps 600 --set train.lr=0.001 \
    --set train.warmup_steps=20 --set train.eval_every=200 --set train.sample_every=600 --device "$DEVICE"
  "$B" export --var "$W/var/var.safetensors" --vae "$R/vq-long/vqvae.safetensors" --text-encoder "$MINILM" \
    --quant q8 --text-quant q4 "${SAMPLING[@]}" --default-prompt "monkey" --no-report --out "$W/sub50.nsp"
  for P in "$R/emoji-vq2.nsp" "$W/sub50.nsp"; do
    "$B" evaluate --pack "$P" --classifier "$EMOJI_JUDGE" --real "$S/train" --rank "${SAMPLING[@]}" \
      --seed 0 --grid "$W/$(basename "$P" .nsp)-grid.png"
  done
fi

if [ "$what" = emoji-v2 ]; then
  # In progress (docs/EMOJI-LOG.md): the second flat-emoji chain, sized for hours of training.
  # The VQ-VAE of the pack shipped until 2026-12-03 (git 9f74435) trained 5,000 more steps;
  # its tokens; the run's own judge; then a wider VAR (depth 4, width 128, 1.4 M parameters)
  # from scratch on a 30,000-step schedule (about 110 passes over the captions). Every step
  # resumes where it stopped: rerun the same command (e.g. in the next session, or with
  # DEVICE=cuda on a GPU machine). STOP_AFTER=N pauses the VAR at step N.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  mkdir -p "$R"
  [ -s "$R/emoji-v1.nsp" ] || git -C "$ROOT" show 9f74435:models/emoji.nsp > "$R/emoji-v1.nsp"
  "$B" train-vqvae --data "$E/train" --out "$R/vq2" --preset emoji --init "$R/emoji-v1.nsp" --steps 5000 \
    --set train.lr=1e-3 --set train.eval_every=500 --set train.sample_every=2500 --set train.ckpt_every=100 \
    --device "$DEVICE"
  prepare_once "$R/tokens-v2" --data "$E/train-captions" --vae "$R/vq2/vqvae.safetensors" --device "$DEVICE"
  "$B" train-var --tokens "$R/tokens-v2" --vae "$R/vq2/vqvae.safetensors" --out "$R/var-v2" --preset emoji \
    --set model.depth=4 --set model.embed_dim=128 --set model.num_heads=4 --steps 30000 \
    --set train.ckpt_every=200 --set train.eval_every=1000 --set train.sample_every=5000 \
    ${STOP_AFTER:+--stop-after "$STOP_AFTER"} --text-encoder "$MINILM" --device "$DEVICE"
  # The shipped emoji model forks step 14,200; the run keeps only its last two checkpoints.
  [ -s "$R/var-v2-s14200.safetensors" ] || [ ! -s "$R/var-v2/checkpoints/step-00014200.safetensors" ] \
    || cp "$R/var-v2/checkpoints/step-00014200.safetensors" "$R/var-v2-s14200.safetensors"
  [ "${JUDGE:-1}" = 1 ] || exit 0
  # Where the VAR stands (its last checkpoint), against the pack it started from, with this
  # run's judge; docs/EMOJI-LOG.md's mid-schedule rows are STOP_AFTER=4200, 6600, 10400 and 13400.
  judge_emoji "$R/emoji-v1.nsp"
  pack_and_judge emoji-v2 "$R/var-v2/var.safetensors" "$R/vq2/vqvae.safetensors"
fi

if [ "$what" = emoji-v2-balance ]; then
  # An experiment (docs/EMOJI-LOG.md): does weighing the coarse scales more (train.scale_balance)
  # make the emoji-v2 VAR draw its own emoji? Three forks of emoji-v2's step-14,200 checkpoint
  # (run emoji-v2 with STOP_AFTER=14200 first), 2,000 steps each, the learning rate warming up
  # over 50 steps to 1e-3 and decaying linearly to 5 %: the official loss (balance 0, the
  # control), balance 0.5 and balance 1. One thread each, side by side; then the starting point
  # and each fork packed and judged like the shipped pack. Where the VAR goes wrong:
  # scripts/emoji-prefix-grid.py on a model (docs/models/emoji-v2-prefix.png is the step-14,200
  # checkpoint). JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  [ -s "$R/var-v2-s14200.safetensors" ] || { echo "emoji-v2's step-14,200 checkpoint is gone: rerun emoji-v2 from scratch with STOP_AFTER=14200" >&2; exit 1; }
  # One thread per fork even when there is one: the shipped fork was trained that way.
  pids=()
  for sb in ${BALANCES:-0 0.5 1}; do
    RAYON_NUM_THREADS=1 "$B" train-var --tokens "$R/tokens-v2" --vae "$R/vq2/vqvae.safetensors" \
      --out "$R/var-v2-ft-sb$sb" --preset emoji --init "$R/var-v2-s14200.safetensors" --steps 2000 \
      --set train.lr=1e-3 --set train.scale_balance=$sb --set train.ckpt_every=100 \
      --set train.eval_every=500 --set train.sample_every=5000 --text-encoder "$MINILM" --device "$DEVICE" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done # a failed fork stops the script
  [ "${JUDGE:-1}" = 1 ] || exit 0
  # The starting point, judged like the forks.
  [ -s "$R/emoji-v2-s14200.nsp" ] || pack_emoji "$R/var-v2-s14200.safetensors" "$R/vq2/vqvae.safetensors" "$R/emoji-v2-s14200.nsp"
  judge_emoji "$R/emoji-v2-s14200.nsp"
  for sb in ${BALANCES:-0 0.5 1}; do
    pack_and_judge "emoji-v2-sb$sb" "$R/var-v2-ft-sb$sb/var.safetensors" "$R/vq2/vqvae.safetensors"
  done
fi

if [ "$what" = emoji-balanced-more ]; then
  # The shipped emoji VAR (docs/EMOJI-LOG.md, "Longer at balance 1"): the balance-1 fork of
  # emoji-v2-balance trained 3,000 more steps the same way, from a fresh warm-up to 1e-3;
  # resumable; judged like the shipped pack at its end (JUDGE=0 trains only). The measured run
  # was started with --steps 6000 and resumed at step 1,100 with --steps 3000: over its first
  # 1,100 steps the rate followed the 6,000-step schedule (1e-3 down to 0.87e-3, where this
  # command's schedule gives 0.69e-3 at step 1,100).
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  fork_emoji_var "$R/tokens-v2" "$R/vq2/vqvae.safetensors" "$R/var-v2-ft-sb1/var.safetensors" \
    "$R/var-v2-sb1-more" 3000 1e-3 --set train.scale_balance=1 ${STOP_AFTER:+--stop-after "$STOP_AFTER"}
  [ "${JUDGE:-1}" = 1 ] || exit 0
  pack_and_judge emoji-sb1-more "$R/var-v2-sb1-more/var.safetensors" "$R/vq2/vqvae.safetensors"
fi

if [ "$what" = emoji-text-noise ]; then
  # An experiment (docs/EMOJI-LOG.md, "Noise on the captions"): does noise on the caption
  # embeddings (train.text_noise) help prompts the model never saw? Forks of the VAR of
  # emoji-balanced-more, 2,000 steps each from a fresh warm-up to 1e-3 at balance 1: no noise
  # (the control, shipped since 2026-12-03), σ = 0.25 and σ = 0.5. One thread each (the
  # measured σ = 0.25 run went after the other two, which ran side by side); then each packed
  # with the shipped VQ-VAE and judged like the shipped pack, and on the held-out prompts by a
  # second judge. JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  pids=()
  for tn in ${NOISES:-0 0.25 0.5}; do
    RAYON_NUM_THREADS=1 fork_emoji_var "$R/tokens-v2" "$R/vq2/vqvae.safetensors" "$R/var-v2-sb1-more/var.safetensors" \
      "$R/var-v2-sb1-tn$tn" 2000 1e-3 --set train.scale_balance=1 --set train.text_noise="$tn" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  [ "${JUDGE:-1}" = 1 ] || exit 0
  # A second, stronger judge for the held-out prompts: the same classifier trained 3,000 steps.
  E="$DATA/emoji-flat"
  emoji_classifier 3000 "$R/classifier-3000.safetensors"
  for tn in ${NOISES:-0 0.25 0.5}; do
    pack_and_judge "emoji-tn$tn" "$R/var-v2-sb1-tn$tn/var.safetensors" "$R/vq2-dec/vqvae.safetensors"
    for seed in 0 1 2; do
      "$B" evaluate --pack "$R/emoji-tn$tn.nsp" --classifier "$R/classifier-3000.safetensors" --real "$E/test" \
        --reference "$E/train" "${SAMPLING[@]}" --seed "$seed"
    done
  done
fi

if [ "$what" = emoji-coarse ]; then
  # A step of the shipped VAR, and an experiment (docs/EMOJI-LOG.md, "Weighing the coarse scales
  # more"): the VAR's layout goes wrong at the first scales, so do the coarse scales need more
  # of the loss? Two forks of the control's pack, 2,000 steps each from a fresh warm-up to
  # 1e-3, side by side, one thread each: balance 1 (the recipe of the last rounds; shipped
  # on 2026-12-03) and 1.5 (the first scale carries 40 % of the loss). They start from the
  # pack's q8 weights, on tokens of the pack's own VQ-VAE (the measured runs did: the f32
  # checkpoint was on a machine since gone). JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  P="$R/emoji-tn0.nsp"
  [ -s "$P" ] || pack_emoji "$R/var-v2-sb1-tn0/var.safetensors" "$R/vq2-dec/vqvae.safetensors" "$P"
  prepare_once "$R/tokens-v3" --data "$E/train-captions" --vae "$P" --device "$DEVICE"
  forks=()
  for sb in ${BALANCES:-1 1.5}; do forks+=("v3-sb$sb" "$P" "$sb" 0 1e-3); done
  emoji_v3_forks "${forks[@]}"
fi

if [ "$what" = emoji-coarse-even ]; then
  # The shipped VAR's last step, and an experiment (docs/EMOJI-LOG.md, "Coarse first, then
  # even"): both forks of emoji-coarse (run it first) trained 2,000 more steps at balance 1,
  # from a fresh warm-up to 1e-3, side by side, one thread each. From balance 1.5 it is a
  # schedule (coarse scales first, then every scale the same); from balance 1 it is the
  # control, the same number of steps at balance 1 throughout (shipped since 2026-12-04).
  # JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  forks=()
  for sb in ${FROMS:-1 1.5}; do
    [ -s "$R/var-v3-sb$sb/var.safetensors" ] || { echo "run emoji-coarse first (BALANCES=$sb)" >&2; exit 1; }
    forks+=("v4-sb$sb-sb1" "$R/var-v3-sb$sb/var.safetensors" 1 0 1e-3)
  done
  emoji_v3_forks "${forks[@]}"
fi

if [ "$what" = emoji-even-more ]; then
  # An experiment, not shipped (docs/EMOJI-LOG.md, "Coarse first, then even"): the shipped VAR
  # (the balance-1 control of emoji-coarse-even; run that first) trained 2,000 more steps the
  # same way, one thread. JUDGE=0 trains only.
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  emoji_v3_forks v5-sb1 "$RUNS/emoji-flat/var-v4-sb1-sb1/var.safetensors" 1 0 1e-3
fi

if [ "$what" = emoji-deeper ]; then
  # The shipped VAR's last step, and an experiment (docs/EMOJI-LOG.md, "More depth"): the
  # previous VAR (emoji-coarse-even's control; run that first) with blocks added on top
  # (train-var --deepen; each starts as the identity), trained 2,000 steps like emoji-even-more
  # (its control, the same steps at depth 4), side by side, one thread each. DEPTHS picks the
  # added blocks (default "2 4": depth 6, which emoji-deeper-more trains on, and depth 8). Packed with
  # the FITTED export, which keeps depth 6 under 16 MB. JUDGE=0 trains only.
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  PACK_ARGS=("${FITTED[@]}")
  forks=()
  for d in ${DEPTHS:-2 4}; do
    forks+=("v5-sb1-d$((4 + d))" "$RUNS/emoji-flat/var-v4-sb1-sb1/var.safetensors" 1 "$d" 1e-3)
  done
  emoji_v3_forks "${forks[@]}"
fi

if [ "$what" = emoji-deeper-more ]; then
  # A step of the shipped chain (emoji-cuda trains on from it), and an experiment
  # (docs/EMOJI-LOG.md, "More depth, longer"): the
  # depth-6 VAR of emoji-deeper (var-v5-sb1-d6; run that first) trained 2,000 more steps from
  # a fresh warm-up, at the peak learning rate it had (1e-3, shipped since 2026-12-04) and at
  # a lower one (LRS, default "1e-3 3e-4"; 2e-3 was tried and stopped: it undid the training),
  # side by side, one thread each; then, unless JUDGE=0, packed with the FITTED export and
  # judged. FROM and TO name the runs (default v5-sb1-d6 and v6-d6: var-FROM → var-TO-lrLR).
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  PACK_ARGS=("${FITTED[@]}")
  forks=()
  for lr in ${LRS:-1e-3 3e-4}; do
    forks+=("${TO:-v6-d6}-lr$lr" "$RUNS/emoji-flat/var-${FROM:-v5-sb1-d6}/var.safetensors" 1 0 "$lr")
  done
  emoji_v3_forks "${forks[@]}"
fi

if [ "$what" = emoji-cuda ]; then
  # A step of the shipped chain (2026-12-04): the depth-6 VAR of emoji-deeper-more
  # (var-v6-d6-lr1e-3) trained further on a GPU (docs/EMOJI-LOG.md, "On a GPU"): batch 64, a
  # fresh warm-up to 1e-3 and linear decay over CUDA_STEPS (default 528, what fitted into the
  # H200 run of 2026-12-04); then packed with the FITTED export and judged. Run it with
  # DEVICE=cuda and the CUDA build (native-trainer/scripts/build-cuda.sh) where cargo is at
  # hand; on the CPU it trains the same way, slower, and not bit for bit as on a GPU. The
  # measured run was scripts/gpu-lease.sh on a machine without cargo, with the same training
  # settings; its run folder was unpacked into $RUNS/emoji-flat/var-TO (TO, default
  # v7-d6-cuda-b64), which this target then packs and judges without training again.
  # FROM (default v6-d6-lr1e-3) names the run it starts from; CUDA_BATCH (default 64) and
  # CUDA_LR (the peak, default 1e-3) are the fork's, as FORKS sets them in gpu-lease.sh.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  to="${TO:-v7-d6-cuda-b64}"
  [ -s "$R/var-$to/var.safetensors" ] || fork_emoji_var "$R/tokens-v3" "$R/emoji-tn0.nsp" \
    "$R/var-${FROM:-v6-d6-lr1e-3}/var.safetensors" "$R/var-$to" "${CUDA_STEPS:-528}" "${CUDA_LR:-1e-3}" \
    --batch-size "${CUDA_BATCH:-64}" --set train.scale_balance=1 --set train.eval_every=500
  if [ "${JUDGE:-1}" = 1 ]; then
    pack_and_judge "emoji-$to" "$R/var-$to/var.safetensors" "$R/emoji-tn0.nsp" "${FITTED[@]}"
  fi
fi

if [ "$what" = emoji-soup ]; then
  # The mean of the weights of several emoji VARs trained from one starting point (a model
  # soup; docs/EMOJI-LOG.md, "A model soup"): SOUP lists their runs (default the GPU round and the
  # CPU round after it), TO names the mean's run (var-TO, default v8-soup). Then packed with
  # the FITTED export and judged, unless JUDGE=0. The shipped VAR is the third of three such
  # means (the end of the emoji chain): SOUP="v9-soup3 v10-d6-lr1e-3 v10-gpu-b64
  # v10-gpu-b64lo v10-gpu-b128" TO=v10-soup5.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  to="${TO:-v8-soup}"
  inputs=()
  for run in ${SOUP:-v7-d6-cuda-b64 v8-d6-lr1e-3}; do inputs+=("$R/var-$run/var.safetensors"); done
  "$B" average "${inputs[@]}" --out "$R/var-$to/var.safetensors"
  if [ "${JUDGE:-1}" = 1 ]; then
    pack_and_judge "emoji-$to" "$R/var-$to/var.safetensors" "$R/emoji-tn0.nsp" "${FITTED[@]}"
  fi
fi

if [ "$what" = emoji-low-lr ]; then
  # An experiment (docs/EMOJI-LOG.md, "What limits the images"): forks of the shipped VAR at a
  # low learning rate, and their means with it (model soups that stay near it). They start
  # from the shipped pack's q8 weights, on tokens of its own VQ-VAE (the measured runs did: the
  # f32 soup's checkpoint is not kept): 400 steps at batch 64, a fresh warm-up to each peak
  # of LRS (default 2e-4 1e-4) and linear decay, balance 1, one thread each, side by side.
  # Then the means: the shipped VAR with the first fork (var-v12-pack-PEAK, e.g.
  # var-v12-pack-2e-4) and with all (var-v12-soup3). Judged with them: the shipped VAR as the forks start (var-v12-pack),
  # exported again, the control. JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  P=models/emoji.nsp
  prepare_once "$R/tokens-pack" --data "$E/train-captions" --vae "$P" --device "$DEVICE"
  # The shipped VAR as safetensors (dequantized, as the forks start), the control.
  "$B" average "$P" --out "$R/var-v12-pack/var.safetensors"
  names=() pids=()
  for lr in ${LRS:-2e-4 1e-4}; do
    n="v12-lowlr$lr"
    names+=("$n")
    RAYON_NUM_THREADS=1 fork_emoji_var "$R/tokens-pack" "$P" "$P" "$R/var-$n" 400 "$lr" \
      --batch-size 64 --set train.scale_balance=1 --set train.eval_every=200 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  inputs=("$R/var-v12-pack/var.safetensors")
  for n in "${names[@]}"; do inputs+=("$R/var-$n/var.safetensors"); done
  pair="v12-pack-${names[0]#v12-lowlr}"
  "$B" average "${inputs[@]:0:2}" --out "$R/var-$pair/var.safetensors"
  "$B" average "${inputs[@]}" --out "$R/var-v12-soup3/var.safetensors"
  if [ "${JUDGE:-1}" = 1 ]; then
    for n in v12-pack "${names[@]}" "$pair" v12-soup3; do
      pack_and_judge "emoji-$n" "$R/var-$n/var.safetensors" "$P" "${FITTED[@]}"
    done
  fi
fi

if [ "$what" = emoji-swa ]; then
  # An experiment, not adopted (docs/EMOJI-LOG.md, "Averaging one run's checkpoints"): one fork
  # of the shipped VAR at a constant learning rate after the warm-up (SWA_LR, default 5e-4), batch 64, SWA_STEPS steps
  # (default 800), balance 1, one thread, a checkpoint every 50 steps (all kept); then the mean
  # of its checkpoints from half-way on (stochastic weight averaging, Izmailov et al. 2018),
  # alone and with the shipped VAR, each packed and judged. JUDGE=0 trains only.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  P=models/emoji.nsp
  n="v12-swa${SWA_LR:-5e-4}"
  steps="${SWA_STEPS:-800}"
  [ "$steps" = 800 ] || n="$n-$steps"
  keep=$((steps / 50 + 1))
  [ "$keep" -ge 20 ] || keep=20
  prepare_once "$R/tokens-pack" --data "$E/train-captions" --vae "$P" --device "$DEVICE"
  # Rerun, it resumes an interrupted fork or finds nothing to do.
  RAYON_NUM_THREADS=1 fork_emoji_var "$R/tokens-pack" "$P" \
    "$P" "$R/var-$n" "$steps" "${SWA_LR:-5e-4}" --batch-size 64 --set train.scale_balance=1 \
    --set train.lr_end=1 --set train.ckpt_every=50 --set train.keep_last="$keep" --set train.eval_every=200
  cks=()
  # Checkpoints are at multiples of 50: the mean takes those from half-way on.
  for s in $(seq $(((steps / 2 + 49) / 50 * 50)) 50 "$steps"); do cks+=("$R/var-$n/checkpoints/step-$(printf %08d "$s").safetensors"); done
  "$B" average "${cks[@]}" --out "$R/var-$n-avg/var.safetensors"
  "$B" average "$P" "$R/var-$n-avg/var.safetensors" --out "$R/var-$n-avg-pack/var.safetensors"
  if [ "${JUDGE:-1}" = 1 ]; then
    for m in "$n-avg" "$n-avg-pack" "$n"; do
      pack_and_judge "emoji-$m" "$R/var-$m/var.safetensors" "$P" "${FITTED[@]}"
    done
  fi
fi

if [ "$what" = tokenizer-noise ]; then
  # A diagnostic (docs/EMOJI-LOG.md, "What limits the images"): how much each shipped VAR depends
  # on the exact weights of its VQ-VAE. The pack's VQ-VAE (dequantized) is moved by noise of q8
  # rounding's size; the training images are tokenized by both, the tokens compared, and the
  # pack's VAR validated on both (`--validate-only`: the first 256 held-out sequences, nothing
  # trained). Needs numpy.
  W="$RUNS/tokenizer-noise"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  mkdir -p "$W"
  for m in emoji digits; do
    P="models/$m.nsp"
    if [ "$m" = emoji ]; then
      data="$DATA/emoji-flat/train-captions" more=(--text-encoder "$MINILM")
    else
      data="$DATA/mnist/train-images-idx3-ubyte" more=()
    fi
    "$B" average "$P" --part vae --out "$W/$m-vae.safetensors"
    python3 scripts/vqvae-noise.py perturb "$W/$m-vae.safetensors" "$W/$m-vae-noise.safetensors" 1
    prepare_once "$W/$m-tokens" --data "$data" --vae "$P" --device "$DEVICE"
    prepare_once "$W/$m-tokens-noise" --data "$data" --vae "$W/$m-vae-noise.safetensors" --device "$DEVICE"
    python3 scripts/vqvae-noise.py compare "$W/$m-tokens" "$W/$m-tokens-noise"
    if [ "$m" = emoji ]; then
      for v in "$P" "$W/$m-vae-noise.safetensors"; do "$B" eval-vqvae --vae "$v" --data "$DATA/emoji-flat/test"; done
    fi
    for t in tokens tokens-noise; do
      "$B" train-var --tokens "$W/$m-$t" --vae "$P" --init "$P" --preset "$m" --out "$W/$m-val-$t" \
        --validate-only "${more[@]}" --device "$DEVICE"
    done
  done
fi

if [ "$what" = emoji-swa-images ]; then
  # A diagnostic (docs/EMOJI-LOG.md, "Images along a run"): the checkpoints of the two emoji-swa
  # forks (run `emoji-swa` and `SWA_LR=1e-3 SWA_STEPS=400 emoji-swa` first), their means and the
  # shipped VAR, each validated (`--validate-only`) and judged from its f32 weights with the
  # f32 text encoder (`evaluate --var`): every training label, seed 0, the shipped settings.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  W="$R/swa-images"
  mkdir -p "$W"
  "$B" average models/emoji.nsp --out "$W/shipped-var.safetensors"
  "$B" average models/emoji.nsp --part vae --out "$W/shipped-vae.safetensors"
  judge_var() { # NAME VAR
    [ -s "$W/$1.json" ] && return 0
    "$B" train-var --tokens "$R/tokens-pack" --vae models/emoji.nsp --init "$2" --preset emoji \
      --out "$W/val-$1" --validate-only --text-encoder "$MINILM" --device "$DEVICE" > "$W/$1.val"
    "$B" evaluate --var "$2" --vae "$W/shipped-vae.safetensors" --text-encoder "$MINILM" "${SAMPLING[@]}" \
      --classifier "$EMOJI_JUDGE" --real "$E/train" --rank --seed 0 --items "$W/$1.jsonl" \
      --device "$DEVICE" > "$W/$1.json.tmp"
    mv "$W/$1.json.tmp" "$W/$1.json"
  }
  judge_var shipped "$W/shipped-var.safetensors"
  for s in 100 200 300 400 500 600 700 800; do
    judge_var "swa5e-4-$s" "$R/var-v12-swa5e-4/checkpoints/step-$(printf %08d "$s").safetensors"
  done
  judge_var swa5e-4-mean "$R/var-v12-swa5e-4-avg/var.safetensors"
  for s in 100 200 300 400; do
    judge_var "swa1e-3-$s" "$R/var-v12-swa1e-3-400/checkpoints/step-$(printf %08d "$s").safetensors"
  done
  judge_var swa1e-3-mean "$R/var-v12-swa1e-3-400-avg/var.safetensors"
  for f in "$W"/*.json; do
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); v = json.loads(open(sys.argv[2]).read());
px = d["ranking"]["pixels_16x16"];
print(sys.argv[3], "validation loss %.3f, token acc. %.1f %%, nearest %.1f %%, top-5 %.1f %%, right group %.1f %%, FD %.2f"
  % (v["val_loss"], 100 * v["val_acc"], 100 * px["top1"], 100 * px["top5"], 100 * d["accuracy_generated"],
     d["frechet_distance"]))' \
      "$f" "${f%.json}.val" "$(basename "${f%.json}")"
  done
fi

# What PACK (default models/emoji.nsp) draws for every training and held-out label at seeds
# 0-2, judged with EMOJI_JUDGE at the shipped settings: one JSON line and one PNG per image, in
# one folder per pack file name (so another PACK never reuses them), shared by emoji-breakdown
# and emoji-pretrained. Reports already written (with their images) are kept.
emoji_pack_items() { # NAME evaluate-args...
  local name="$1"; shift
  [ -s "$W/$name.json" ] && return 0
  "$B" evaluate --pack "$PACK" --classifier "$EMOJI_JUDGE" "${SAMPLING[@]}" --rank \
    --items "$W/$name.jsonl" --device "$DEVICE" "$@" > "$W/$name.json.tmp"
  mv "$W/$name.json.tmp" "$W/$name.json"
}
emoji_pack_labels() {
  local E="$DATA/emoji-flat" seed split name ref
  PACK="${PACK:-models/emoji.nsp}"
  W="$RUNS/emoji-flat/breakdown-$(basename "$PACK" .nsp)"
  mkdir -p "$W"
  for seed in 0 1 2; do
    for split in train test; do
      name="$split-$seed"
      # A report from before the images were kept, or images without their report (an
      # interrupted run), are made again (the same images): --images wants an empty folder.
      [ -s "$W/$name.json" ] && [ -d "$W/$name" ] || rm -rf "$W/$name" "$W/$name.json"
      ref=(); [ "$split" = test ] && ref=(--reference "$E/train")
      emoji_pack_items "$name" --real "$E/$split" "${ref[@]}" --seed "$seed" --images "$W/$name"
    done
  done
}

if [ "$what" = emoji-breakdown ]; then
  # What a pack draws, by kind of prompt (docs/MODELS.md, "What it draws, by kind of prompt"):
  # every training label and held-out label at seeds 0-2, every training caption at seed 0,
  # one JSON line per image, grouped by scripts/emoji-breakdown.py; and the picture of six
  # training emoji per group. PACK as in emoji_pack_labels. Reports already written are kept
  # (delete the folder to redo them).
  E="$DATA/emoji-flat"
  emoji_pack_labels
  emoji_pack_items captions --real "$E/train-captions" --seed 0
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  python3 scripts/emoji-breakdown.py "$E/captions.json" "$W"/train-{0,1,2}.jsonl --captions "$W/captions.jsonl" \
    --embed "$B" "$MINILM"
  python3 scripts/emoji-breakdown.py "$E/captions.json" "$W"/test-{0,1,2}.jsonl
  python3 scripts/emoji-by-group.py "$B" "$PACK" "$E" "$W/by-group.png"
fi

if [ "$what" = emoji-pretrained ]; then
  # The pack judged with features of networks pretrained on ImageNet (docs/MODELS.md, "A second
  # judge: pretrained features"): every training and held-out label at seeds 0-2, the images
  # written by `evaluate --images`, and the VQ-VAE's reconstructions of the real emoji, then
  # scripts/emoji-pretrained-judge.py (Inception-v3 and EfficientNet-Lite features; a linear
  # judge fitted on the real training emoji; cosine ranks; Fréchet distance). About 90
  # minutes on two cores, half of it Inception. PACK as in emoji_pack_labels; finished
  # reports and features are kept. Needs Node, npm and
  # `pip install numpy pillow scipy scikit-learn`.
  bash scripts/data/fetch.sh emoji-styles >/dev/null # the judge's choice of training images
  E="$DATA/emoji-flat"
  emoji_pack_labels # the images of emoji-breakdown, judged again
  # The pack's VQ-VAE alone: its reconstructions of the real emoji, the tokenizer's reach.
  for split in train test; do
    [ -d "$W/recon/$split" ] && continue
    rm -rf "$W/recon/$split.tmp" # an interrupted run's (--images wants an empty folder)
    "$B" eval-vqvae --vae "$PACK" --data "$E/$split" --images "$W/recon/$split.tmp" \
      --device "$DEVICE" > "$W/recon-$split.json"
    mv "$W/recon/$split.tmp" "$W/recon/$split"
  done
  python3 scripts/emoji-pretrained-judge.py "$E" "$W/judge" --generated "$W" --recon "$W/recon"
fi

if [ "$what" = emoji-judge ]; then
  # The committed judge's recorded command (models/judges/emoji-groups.safetensors was made by
  # it on the 2-core VM, 2026-12-04: 66.9 % of the real held-out emoji in the right group),
  # trained afresh into the runs folder (judges from other machines differ slightly).
  rm -f "$RUNS/emoji-flat/judge-retrained.safetensors"
  emoji_classifier 800 "$RUNS/emoji-flat/judge-retrained.safetensors"
fi

if [ "$what" = emoji-judge-styles ]; then
  # An experiment, not adopted (docs/EMOJI-LOG.md, "A judge from three art styles"): the judge
  # trained on the training emoji in three art styles (Noto, Twemoji, Fluent Flat) for 3,000
  # and 6,000 steps, scored on the held-out Noto emoji like the shipped judge, one thread.
  E="$(bash scripts/data/fetch.sh emoji-styles)/emoji-flat"
  for steps in 3000 6000; do
    "$B" train-classifier --data "$E/groups/train-styles" --test "$E/groups/test" --size 64 \
      --steps "$steps" --batch-size 32 --flip --out "$RUNS/emoji-flat/judge-styles-$steps.safetensors" --device "$DEVICE"
  done
fi

if [ "$what" = emoji-text-noise-clean ]; then
  # An experiment, not shipped (docs/EMOJI-LOG.md, "Noise on the captions"): the σ = 0.25 fork of
  # emoji-text-noise trained 500 more steps without noise (warm-up to 3e-4, two threads), to
  # sharpen the training prompts while keeping what the noise gave the held-out ones.
  R="$RUNS/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  RAYON_NUM_THREADS=2 fork_emoji_var "$R/tokens-v2" "$R/vq2/vqvae.safetensors" "$R/var-v2-sb1-tn0.25/var.safetensors" \
    "$R/var-v2-sb1-tn0.25-clean" 500 3e-4 --set train.scale_balance=1
  [ "${JUDGE:-1}" = 1 ] || exit 0
  pack_emoji "$R/var-v2-sb1-tn0.25-clean/var.safetensors" "$R/vq2-dec/vqvae.safetensors" "$R/emoji-tn0.25c.nsp"
  judge_emoji "$R/emoji-tn0.25c.nsp"
fi

if [ "$what" = emoji-vq-decoder ]; then
  # The shipped emoji VQ-VAE (docs/MODELS.md, "Reconstruction"): vq2's decoder trained 2,000
  # more steps alone (train.decoder_only): encoder, codebook and φ stay bit for bit, so the
  # tokens the VAR was trained on, and the VAR, stay valid.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  "$B" train-vqvae --data "$E/train" --out "$R/vq2-dec" --preset emoji --init "$R/vq2/vqvae.safetensors" \
    --steps 2000 --set train.lr=5e-4 --set train.decoder_only=true --set train.eval_every=500 \
    --set train.sample_every=2000 --set train.ckpt_every=100 --device "$DEVICE"
  "$B" eval-vqvae --vae "$R/vq2-dec/vqvae.safetensors" --data "$E/test"
fi

if [ "$what" = emoji-vq-gan ]; then
  # An experiment, not shipped (docs/MODELS.md, "Reconstruction"): the shipped VQ-VAE's decoder
  # trained 1,000 more steps alone with the patch-GAN loss (weight 0.1).
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  "$B" train-vqvae --data "$E/train" --out "$R/vq2-gan" --preset emoji --init "$R/vq2-dec/vqvae.safetensors" \
    --steps 1000 --set train.lr=2e-4 --set train.decoder_only=true --set train.gan_weight=0.1 \
    --set train.eval_every=250 --set train.sample_every=1000 --set train.ckpt_every=100 --device "$DEVICE"
  "$B" eval-vqvae --vae "$R/vq2-gan/vqvae.safetensors" --data "$E/test"
fi

if [ "$what" = emoji-wide ]; then
  # An experiment, not shipped (docs/EMOJI-LOG.md): a wider VAR (depth 4, width 128, 1.4 M
  # parameters) from scratch on the same tokens, 2,000 steps, then judged like the shipped pack.
  R="$RUNS/emoji-flat"
  E="$DATA/emoji-flat"
  MINILM="${NEXTSCALE_MINILM_DIR:-$(bash scripts/fetch-minilm.sh)}"
  "$B" train-var --tokens "$R/tokens" --vae "$R/vq/vqvae.safetensors" --out "$R/var-d4w128" --preset emoji \
    --set model.depth=4 --set model.embed_dim=128 --set model.num_heads=4 --steps 2000 \
    --text-encoder "$MINILM" --device "$DEVICE"
  "$B" export --var "$R/var-d4w128/var.safetensors" --vae "$R/vq/vqvae.safetensors" --text-encoder "$MINILM" \
    --quant q8 --text-quant q4 "${SAMPLING[@]}" --default-prompt "grinning face" --out "$R/emoji-d4w128.nsp"
  judge_emoji "$R/emoji-d4w128.nsp"
fi
