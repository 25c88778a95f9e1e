"""The job runtime under every job: Ray start-up and actor pools, job configs, inputs, the results manifest."""
