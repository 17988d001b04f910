#!/usr/bin/env python
"""Write a ZeroSearch_dataset folder (train/test parquet) from local QA jsonl files; see --help.

    python scripts/prepare_data.py --train nq_open_dev hotpotqa_dev \
        --test nq_test_sub1000_flashrag triviaqa_test_sub1000 popqa_test_sub1000 bamboogle_test \
        --out data/zerosearch_dataset
"""

import sys
from pathlib import Path

# Run from a checkout: this repository's package first, whatever else is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
