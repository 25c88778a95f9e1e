"""Ray job entrypoint of attribute-classifier training (same code as `dva train-classifier`).

    ray job submit --working-dir . -- python jobs/train_classifier.py --config gpu images=s3://… \
        annotations=s3://…/CelebAMask-HQ-attribute-anno.txt output=s3://…/celebahq.safetensors
"""

import sys

from dva.cli import entry

if __name__ == "__main__":
    entry(["train-classifier", *sys.argv[1:]])
