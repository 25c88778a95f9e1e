"""Every `dva` subcommand behaves alike on the command line (`dva.runtime.cli`): a bad config key and a missing file
are one `dva NAME: error:` line on stderr with credentials redacted and exit code 2; a job whose only failures are
inputs recorded in its manifest exits 0 (a RayJob must not retry it), one whose every input failed exits 1; and a
finished process ends with its code, Ray shut down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dva.cli import COMMANDS
from dva.cli import main as dva
from dva.runtime.cli import EXIT_CHECK_FAILED, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from dva.runtime.manifest import JobSummary, read_manifest
from dva.samples import make_sample_clip

REPO = Path(__file__).resolve().parents[2]
KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def command_lines(tmp: Path, missing: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """Per subcommand: the name its errors carry, a valid command line to which a bad key is added, and one that
    names the file `missing`, which does not exist."""
    inputs, out = tmp / "in", tmp / "out"
    inputs.mkdir(exist_ok=True)
    (inputs / "a.mp4").write_bytes(b"never decoded")
    job = [f"input={inputs}", f"output={out}"]
    untrained = [*job, "random_weights=true"]  # a job that decodes with the UNet, without a checkpoint
    return {
        "edit": ("dva edit", untrained, [*job, f"model.checkpoint={missing}"]),
        "encode": ("dva encode", untrained, [*job, f"model.checkpoint={missing}"]),
        "eval": ("dva eval", untrained, [f"input={missing}", f"output={out}", "random_weights=true"]),
        "report": ("dva report", [str(out)], [missing]),  # no config: the bad key is an unknown argument
        "preprocess": ("dva preprocess", job, [f"input={missing}", f"output={out}"]),
        "train": ("dva train", [f"data.path={inputs}", f"storage_path={out}"],
                  [f"data.path={missing}", f"storage_path={out}"]),
        "train-classifier": ("dva train-classifier", [f"images={inputs}", f"annotations={inputs}/a.txt",
                                                      f"output={out}/c.safetensors"],
                             [f"images={inputs}", f"annotations={missing}", f"output={out}/c.safetensors"]),
        "check": ("dva check edit", ["edit", *untrained], ["edit", *job, f"model.checkpoint={missing}"]),
        "face-crop": ("dva face-crop", [str(inputs / "a.mp4"), str(out)], [missing, str(out)]),
        "convert-reference": ("dva convert-reference", ["--ckpt", str(inputs / "a.mp4"), "--out", f"{out}/m.safetensors"],
                              ["--ckpt", missing, "--out", f"{out}/m.safetensors"]),
    }


def test_every_subcommand_is_covered(tmp_path):
    assert set(command_lines(tmp_path, "x")) == set(COMMANDS)


def one_error_line(err: str, prog: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_bad_key_is_one_error_line_and_exit_code_2(name, tmp_path, capsys):
    prog, valid, _ = command_lines(tmp_path, "unused")[name]
    assert dva([name, *valid, "nosuchkey=1"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "nosuchkey" in one_error_line(err, prog) and "Traceback" not in out + err


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_missing_file_is_one_redacted_error_line_and_exit_code_2(name, where, tmp_path, capsys, request):
    if where == "local":
        missing, named = str(tmp_path / "gone" / "missing.file"), str(tmp_path / "gone" / "missing.file")
    else:  # credentials in the URI: never printed, whatever quotes them
        bucket = request.getfixturevalue("s3_bucket").removeprefix("s3://")
        missing, named = f"s3://{KEY_ID}:{SECRET}@{bucket}/gone/missing.file", f"{bucket}/gone/missing.file"
    prog, _, argv = command_lines(tmp_path, missing)[name]
    code = dva([name, *argv])
    out, err = capsys.readouterr()
    assert KEY_ID not in out + err and SECRET not in out + err
    if name == "check":  # the config is valid: the missing file is a failed check, listed with the others
        assert code == EXIT_CHECK_FAILED and "model.checkpoint" in out.split("check(s) failed")[1], out
        return
    assert code == EXIT_USAGE
    line = one_error_line(err, prog)
    assert named.rsplit("/", 1)[0] in line, line  # the file (or its folder, for those that name the folder)


@pytest.mark.parametrize("argv, prog", [
    (["edit"], "dva edit"), (["encode"], "dva encode"), (["edit", "--dry-run"], "dva edit --dry-run"),
    (["check", "edit"], "dva check edit"), (["check", "edit", "--config", "cluster_gpu"], "dva check edit"),
    (["eval"], "dva eval"), (["eval", "--config", "gpu"], "dva eval"), (["check", "eval"], "dva check eval")])
def test_a_job_that_decodes_with_the_unet_refuses_to_start_without_trained_weights(argv, prog, tmp_path, capsys):
    """A UNet with random weights returns its input (zero-initialised output layer): without `model.checkpoint` an
    edit would change nothing and report ok. The job, its check and its dry run refuse, at load; random weights are
    run only when asked for, and never beside a checkpoint."""
    paths = [f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"]
    assert dva([*argv, *paths]) == EXIT_USAGE
    out, err = capsys.readouterr()
    line = one_error_line(err, prog)
    assert "config key `model.checkpoint`: not set" in line and "random_weights=true" in line, line
    assert "[dva check]" not in out  # nothing was checked or started
    assert dva([*argv, *paths, "random_weights=true", f"model.checkpoint={tmp_path / 'm.safetensors'}"]) == EXIT_USAGE
    assert "config key `random_weights`: true, but `model.checkpoint` is set" in capsys.readouterr().err


CONFIG_COMMANDS = ["edit", "encode", "eval", "preprocess", "train", "train-classifier", "check"]


@pytest.mark.parametrize("broken", ["job", "preset"])
@pytest.mark.parametrize("name", CONFIG_COMMANDS)
def test_a_malformed_yaml_file_is_one_error_line_naming_it_and_exit_code_2(name, broken, tmp_path, capsys):
    """A YAML syntax error, in the `--config` file or in a preset it names: the file and line, not a traceback."""
    prog, valid, _ = command_lines(tmp_path, "unused")[name]
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nedits: [reconstruct\nprecision: fp32\n")
    config = bad
    if broken == "preset":
        config = tmp_path / "job.yaml"
        config.write_text(f"model_preset: {bad}\n")
    assert dva([name, *valid, "--config", str(config)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    line = one_error_line(err, prog)
    assert f"config file '{bad}', line 3" in line and "not valid YAML" in line and "Traceback" not in out + err


def test_help_is_exit_code_0(capsys):
    for name in COMMANDS:
        assert dva([name, "--help"]) == EXIT_OK, name
    assert "usage:" in capsys.readouterr().out


def stand_in_results(monkeypatch, name: str, ok: int, failed: int) -> None:
    """Replace the job that `dva NAME` runs by one that reports `ok` done and `failed` failed inputs."""
    summary = JobSummary(ok=ok, failed=failed, failures=[f"video{i}.mp4: VideoError: corrupt" for i in range(failed)])
    if name in ("edit", "encode"):
        import dva.pipeline.edit_job as job

        monkeypatch.setattr(job, "run_edit_job", lambda cfg: summary)
    elif name == "preprocess":
        import dva.train.preprocess as job

        monkeypatch.setattr(job, "run_preprocess", lambda cfg: summary)
    else:
        import dva.evaluation.job as job
        import dva.runtime.eval_results as results

        monkeypatch.setattr(job, "run_eval", lambda cfg: "summary.json")
        monkeypatch.setattr(results, "read_summary", lambda uri: {"by_method": {}, "counts": {"ok": ok,
                                                                                             "failed": failed}})


@pytest.mark.parametrize("name", ["edit", "encode", "preprocess", "eval"])
def test_failed_inputs_recorded_by_a_job_are_exit_code_0_unless_nothing_came_of_it(name, tmp_path, monkeypatch):
    _, valid, _ = command_lines(tmp_path, "unused")[name]
    stand_in_results(monkeypatch, name, ok=1, failed=1)
    assert dva([name, *valid]) == EXIT_OK  # a RayJob does not retry the whole job for one bad input
    stand_in_results(monkeypatch, name, ok=0, failed=2)
    assert dva([name, *valid]) == EXIT_FAILED


@pytest.mark.slow
def test_an_edit_job_with_one_corrupt_video_exits_0_and_leaves_no_ray(tmp_path, monkeypatch, capfd):
    import ray

    make_sample_clip(tmp_path / "in" / "good.mp4", "astronaut", frames=4)
    (tmp_path / "in" / "corrupt.mp4").write_bytes(b"this is not a video")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    assert dva(["edit", "--config", "local_tiny", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                "steps=3", "chunk_frames=2", "generate.batch_frames=4", "progress=false",
                "random_weights=true"]) == EXIT_OK
    assert not ray.is_initialized()  # the Ray the command started is shut down
    rows = {Path(r["video"]).name: r for r in read_manifest(str(tmp_path / "out")).to_pylist()}
    assert rows["good.mp4"]["status"] == "ok" and rows["corrupt.mp4"]["status"] == "failed"
    out, err = capfd.readouterr()  # what the process wrote, Ray's native core included
    assert rows["corrupt.mp4"]["error"] and "1 ok, 1 failed" in out
    # Ray's notices that ask nothing of the user: token authentication turned on for the local Ray, and the core
    # worker's error line about the arguments Ray Data gives its stage actors
    assert "Token authentication" not in err and "constructor arguments" not in err, err
    # Random weights, asked for: said on the console at start, in every manifest row and on the report's page.
    assert out.startswith("[dva] warning: random_weights=true: the UNet has random weights")
    assert all(row["random_weights"] is True for row in rows.values())
    assert dva(["report", str(tmp_path / "out")]) == EXIT_OK
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert '<p class="warning">Random weights: 2 of the 2 manifest row(s) were made with' in page


def run_python(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_job_entrypoint_ends_the_process_with_the_command_s_code():
    done = run_python("jobs/edit.py", "--config", "local_tiny", "nosuchkey=1")
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "nosuchkey" in one_error_line(done.stderr, "dva edit")


def test_the_process_ends_with_the_code_after_flushing_and_a_bug_is_exit_code_1():
    finished = run_python("-c", "from dva.runtime.cli import exit_process; "
                                "exit_process(lambda: print('all written', end='') or 0)")
    assert (finished.returncode, finished.stdout) == (0, "all written")  # buffered output is not lost
    crashed = run_python("-c", f"from dva.runtime.cli import exit_process; "
                               f"exit_process(lambda: open('s3://{KEY_ID}:{SECRET}@b/x'))")
    assert crashed.returncode == EXIT_FAILED and "Traceback" in crashed.stderr
    assert SECRET not in crashed.stderr and KEY_ID not in crashed.stderr


@pytest.mark.parametrize("userinfo", ["KEYMARK:abc/SECRETMARK", "KEYMARK:p@ss/SECRETMARK", "KEYMARK:abc%2FSECRETMARK",
                                      "KEYMARK:a:b/SECRETMARK/c"])
def test_a_secret_with_slashes_or_at_signs_is_never_printed(userinfo, s3_bucket, tmp_path, capsys):
    bucket = s3_bucket.removeprefix("s3://")
    uri = f"s3://{userinfo}@{bucket}/x"
    assert dva(["edit", f"input={uri}", f"output={tmp_path / 'out'}", "random_weights=true"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    line = one_error_line(err, "dva edit")
    assert "KEYMARK" not in out + err and "SECRETMARK" not in out + err, line
    assert f"s3://***@{bucket}/x" in line


def test_control_and_bidirectional_characters_are_escaped_in_the_error_line(tmp_path, capsys):
    """ESC, CR and U+202E in a name would rewrite the line on a terminal (here into a fake `[dva] done`)."""
    config = tmp_path / "job.yaml"  # YAML's escapes: a command line's override cannot carry control characters
    config.write_text(f'input: "{tmp_path}/in\\e[2K\\r[dva] done\\u202e"\noutput: "{tmp_path}/out"\n'
                      "random_weights: true\n")
    assert dva(["edit", "--config", str(config)]) == EXIT_USAGE
    line = one_error_line(capsys.readouterr().err, "dva edit")
    assert "in\\x1b[2K\\r[dva] done\\u202e does not exist" in line, line
    assert not {"\x1b", "\r", "\u202e"} & set(line)
    assert dva(["edit", f"input={tmp_path}/in\x1b[2K", "random_weights=true"]) == EXIT_USAGE  # one line, too
    line = one_error_line(capsys.readouterr().err, "dva edit")
    assert "config key `input`: the value is not valid YAML (control characters are not allowed)" in line, line


def test_check_names_the_objects_an_input_folder_skips(storage_root, tmp_path, capsys):
    import fsspec

    for name in ("a.mp4", ".b.mp4", "._c.mp4"):
        with fsspec.open(f"{storage_root}/{name}", "wb", auto_mkdir=True) as f:
            f.write(b"never decoded")
    dva(["check", "edit", f"input={storage_root}", f"output={tmp_path / 'out'}", "random_weights=true"])
    out = capsys.readouterr().out
    assert f"1 video(s) in {storage_root}" in out
    assert "warn  input" in out and f"skipped 2 object(s) under {storage_root}: '._c.mp4', '.b.mp4': a hidden name" in out


def test_a_jobs_failure_lines_escape_control_and_bidirectional_characters(capsys):
    from dva.pipeline.config import EditJobConfig
    from dva.pipeline.edit_job import _record, print_summary

    summary = JobSummary()
    video = "s3://b/in/x\x1b[2K\r[dva] done\u202e.mp4"
    _record(EditJobConfig(), summary, {"status": "failed", "video": video, "edit": "identity:@a",
                                       "error": f"cannot read {video}: gone\nnext"})
    print_summary(summary, "s3://b/out\u202e")
    out = capsys.readouterr().out
    escaped = "s3://b/in/x\\x1b[2K\\r[dva] done\\u202e.mp4"
    assert f"[dva] FAILED {escaped} [identity:@a]: cannot read {escaped}: gone\\nnext\n" in out, out
    assert f"[dva]   failed: {escaped} [identity:@a]" in out and "outputs under s3://b/out\\u202e" in out
    assert not {"\x1b", "\r", "\u202e"} & set(out)
