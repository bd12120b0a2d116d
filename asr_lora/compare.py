"""`python -m asr_lora.compare RUN_DIR...`: one table and plots across runs (`evaluation.comparison`)."""

import sys

from asr_lora.evaluation.comparison import main

if __name__ == "__main__":
    sys.exit(main())
