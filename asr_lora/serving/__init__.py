"""Serving adapted models over HTTP: one Whisper base in memory, any loaded LoRA adapter per request.

Owns the decoding engine that batches requests naming different adapters into one peft
mixed-adapter `generate` (`engine.py`), the request batcher with its window and size limit
(`batcher.py`), the OpenAI-compatible FastAPI app with its errors, API key and upload limit
(`app.py`), response formats (`formats.py`), adapter cards for `/v1/models` (`cards.py`) and the
browser page served at `/` (`page.py`). `python -m asr_lora.serve` is the entry point.
"""
