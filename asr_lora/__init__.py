"""asr-lora: adapt Whisper to accented English with LoRA, measure WER, export."""

__version__ = "0.1.0"
