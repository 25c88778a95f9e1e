"""Ray job entrypoint of the batch edit job (same code as `dva edit`).

    ray job submit --working-dir . -- python jobs/edit.py --config cluster_gpu input=s3://… output=s3://… \\
        model.checkpoint=s3://…
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["edit", *sys.argv[1:]])
