"""Pre-flight check of a job (`dva check JOB`, or `--dry-run` on any job command): everything that can fail before
work or cost starts, checked at once and reported together, and the plan of what the job would do.

    report.py   findings (ok / warn / FAIL, each naming its config key or input) and the exit code
    checks.py   the checks every job shares: weight files exist and load (the jobs' own loaders, nothing
                downloaded), inputs list, the output takes a probe write, the Ray resources fit
    faces.py    face frames per video: stored tracks exactly, else a sampled detection with the job's back end
    plan.py     what a job will do (frames, face frames, UNet calls per method, bytes written) and what it costs:
                CPU-hours of the edit job's CPU stages (`cpu_rates.py`), H200-hours (`gpu_rates.py`)
    jobs.py     which checks and plan each job runs, and how it loads its config
    cli.py      the command line
"""
