"""Training jobs: the single-process step (loop.py) and its Ray Train wrapper (ray_train.py), preprocessing of face
videos into training shards (preprocess.py), and attribute-classifier training (classifier_job.py)."""
