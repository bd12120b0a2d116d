"""Deployable checkpoints from a trained adapter: `merge` (merge and prove the merged model equals
the evaluated one), `formats` (hf / adapter / ct2 and model cards), `run` (stage everything, publish
atomically), `job` (what a training run feeds the export). `python -m asr_lora.export` runs `job`."""
