"""The job runtime under every job: Ray start-up and actor pools, job configs, inputs, the results manifest, and
weight resolution (configured URIs → local files, `load_model`)."""
