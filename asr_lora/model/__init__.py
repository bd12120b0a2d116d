"""The Whisper being adapted: `whisper` resolves and loads a model (`bundled:`, `ct2:`, hub, local;
safetensors only), `convert` maps CTranslate2 weights back to transformers exactly, `lora` puts
peft LoRA on the chosen scope, `context` gives training steps a short encoder context, and
`encoder_cache` reuses a frozen encoder's outputs."""
