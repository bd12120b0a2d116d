"""`python -m asr_lora.export run_dir=DIR [export.formats=[hf,ct2]] [export.quantization=[int8]]`."""

import os

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from asr_lora.export.job import main

    main()
