"""Training: the single-process step (loop.py) and its Ray Train wrapper."""
