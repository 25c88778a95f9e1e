"""Ray job entrypoint of the encode-only job (same code as `dva encode`): latents per video, no generation.

    ray job submit --working-dir . -- python jobs/encode.py --config cluster_gpu input=s3://… output=s3://… \\
        model.checkpoint=s3://…
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["encode", *sys.argv[1:]])
