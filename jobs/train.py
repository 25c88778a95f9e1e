"""Ray job entrypoint of training on Ray Train (same code as `dva train`).

    ray job submit --working-dir . -- python jobs/train.py --config dva256_8gpu data.path=s3://… storage_path=s3://…
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["train", *sys.argv[1:]])
