"""The job runtime under every job: Ray start-up and actor pools, job configs, inputs, the results manifest and
the evaluation results folder (what one job writes and another, such as `dva report`, reads)."""
