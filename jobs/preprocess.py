"""Ray job entrypoint of the training-data preprocessing (same code as `dva preprocess`).

    ray job submit --working-dir . -- python jobs/preprocess.py --config cluster input=s3://… output=s3://…
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["preprocess", *sys.argv[1:]])
