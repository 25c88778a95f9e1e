"""Ray job entrypoint of the evaluation (same code as `dva eval`).

    ray job submit --working-dir . -- python jobs/eval.py --config local_tiny mode=edit input=s3://…/edit
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["eval", *sys.argv[1:]])
