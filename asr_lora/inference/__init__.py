"""Decoding audio with a loaded model: batched and long-form transcription, adapter safety checks
and the multi-adapter `Engine`. Used by evaluation, export verification and the CLIs."""
