#!/usr/bin/env bash
# A rank/target/scope comparison study of LoRA on sg_english at equal steps, sized for 2 CPU cores.
# Every run logs to one wandb group (offline unless logged in); `python -m asr_lora.compare DIR...`
# turns the sweep directories into one table + plots.
#   bash bench/study_sg_english.sh [scopes|full|targets|ranks|all]
set -euo pipefail
PY=${PY:-.venv/bin/python}
GROUP=${GROUP:-study_sg_english}
OUT=${OUT:-outputs/study}
what=${1:-all}
common=(export.enabled=false logger.wandb.group=$GROUP)
# Adapters in the encoder (and full fine-tuning) need the 30 s encoder forward+backward every
# step (~1 s/clip on 2 cores), so those slices run at 64 steps x 8 clips, all at equal steps.
short=(train.max_steps=64 train.per_device_train_batch_size=8 train.warmup_steps=6 train.eval_steps=32
       train.save_steps=32)

if [[ $what == scopes || $what == all ]]; then
  $PY -m asr_lora.train -m +recipe=sg_english_decoder "${common[@]}" "${short[@]}" \
      'lora.scope=[decoder_self,decoder_cross],[encoder],[encoder,decoder_self,decoder_cross]' \
      hydra.sweep.dir=$OUT/scopes
fi
if [[ $what == full || $what == all ]]; then
  # Full fine-tuning: same loop/steps/batch; lr = Whisper's pre-training lr for tiny / 40 (3.75e-5).
  $PY -m asr_lora.train -m +recipe=sg_english_full "${common[@]}" "${short[@]}" train.learning_rate=3.75e-5 \
      hydra.sweep.dir=$OUT/full
fi
if [[ $what == targets || $what == all ]]; then
  $PY -m asr_lora.train -m +recipe=sg_english_decoder "${common[@]}" lora=qkvo,qv_ffn \
      'lora.scope=[decoder_self,decoder_cross]' lora.dropout=0.0 hydra.sweep.dir=$OUT/targets
fi
if [[ $what == ranks || $what == all ]]; then
  $PY -m asr_lora.train -m +recipe=sg_english_decoder "${common[@]}" lora.r=1,2,32 lora.alpha=null \
      hydra.sweep.dir=$OUT/ranks
fi
