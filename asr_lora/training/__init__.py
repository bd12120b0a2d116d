"""Training: `job` is the main job (data -> zero-shot eval -> train -> adapted eval -> report ->
export); `trainer` configures Seq2SeqTrainer (schedule, checkpoints, dev WER, fault stops)."""
