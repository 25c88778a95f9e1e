"""The job runtime under every job: Ray start-up and actor pools, job configs, inputs, the results manifest, the
evaluation results folder (what one job writes and another, such as `dva report`, reads), weight resolution
(configured URIs → local files, `load_model`) and the one command-line front end."""
