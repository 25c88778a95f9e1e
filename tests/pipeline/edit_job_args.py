"""Command-line overrides shared by the edit-job tests (a module of its own: every test folder has a conftest)."""


def job_overrides(input_: str, output: str, checkpoint: str, *extra: str) -> list[str]:
    return [f"input={input_}", f"output={output}", f"model.checkpoint={checkpoint}", "steps=3", "chunk_frames=3",
            "generate.batch_frames=6", "progress=false", *extra]
