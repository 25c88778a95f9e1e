"""`dva report`: a static HTML report of an edit run, readable offline in any browser (no server, scripts or fonts).

Per video: stills of the middle frame (whole frame and aligned face) of the source and each edit side by side, video
players, the per-frame identity plot and the metrics when `dva eval` has run, the faces found (one track per person)
and the video's errors. On top, the evaluation next to the paper's numbers, shaped like its tables. The report is a
folder (default `<output>/report/`, local or s3://) whose `index.html` is written last.
"""

from __future__ import annotations

import itertools
import posixpath
import sys
import time
from typing import Optional, Sequence

import numpy as np

from dva.errors import DvaError, StorageError
from dva.latents import LatentStore, read_tracks_summary
from dva.metrics import paper
from dva.runtime.cli import EXIT_FAILED, EXIT_OK, command_parser, run_command
from dva.runtime.eval_results import eval_prefix, read_summary, read_table, summary_uri
from dva.runtime.manifest import read_manifest
from dva.report import html
from dva.report.media import ReportFolder, stills
from dva.storage import exists, join, redact, shown


def _summaries(output_prefix: str, eval_summary: str | Sequence[str] | None) -> dict[str, dict]:
    """Evaluation summaries by mode: those given, or those `dva eval` wrote under the output prefix."""
    if eval_summary is None:
        found = [eval_prefix(output_prefix, mode) for mode in ("edit", "reconstruction")]
        locations = [loc for loc in found if exists(summary_uri(loc))]
    else:
        locations = [eval_summary] if isinstance(eval_summary, str) else list(eval_summary)
    summaries = {}
    for location in locations:
        summary = read_summary(location)
        summaries[summary.get("mode", "")] = summary
    return summaries


def _temporal_section(summary: Optional[dict]) -> str:
    rows, classes = [], []
    for method, values in paper.TEMPORAL.items():
        rows.append([html.esc(f"{method} (paper)"), *(html.number(values[k]) for k in paper.TEMPORAL_METRICS),
                     "—", "—"])
        classes.append("paper")
    if summary is None:
        note = "Not evaluated for this run: <code>dva eval mode=edit input=OUTPUT</code> adds our numbers."
    else:
        for label, means in [("all edits", summary["mean"]), *summary["by_edit"].items()]:
            rows.append([html.esc(f"ours: {label}"), html.number(means["tl_id"]), html.number(means["tg_id"]),
                         html.number(means["flicker"]), str(means["pairs"])])
            classes.append("ours")
        identity = summary["identity"]
        note = (f"Ours: identity network <code>{html.esc(identity['kind'])}</code> on "
                f"{identity['crop_size']} px aligned crops; flicker is face-region frame-to-frame change relative "
                "to the source (1 = as steady as the source). The paper used its own identity network and test "
                "videos, so compare the shape of the numbers, not the third decimal.")
    return (f"<h3>Temporal consistency (1.0 = as consistent as the source)</h3>"
            f"{html.table(['Method', 'TL-ID', 'TG-ID', 'Flicker', 'Pairs'], rows, classes)}"
            f'<p class="note">{note}</p>')


def method_tables(summary: dict) -> list[tuple[str, str, dict]]:
    """(method label, N, means) of a reconstruction summary, by method then N; a summary written before methods
    could be compared holds one method's `by_steps`."""
    by_method = summary.get("by_method") or {summary.get("inversion", "ddim"): summary["by_steps"]}
    return [(label, steps, means) for label, table in by_method.items()
            for steps, means in sorted(table.items(), key=lambda item: int(item[0]))]


def _reconstruction_section(summary: Optional[dict]) -> str:
    rows, classes = [], []
    for (method, steps), values in paper.RECONSTRUCTION.items():
        rows.append([html.esc(f"{method} (paper)"), "—" if steps is None else str(steps),
                     *(html.number(values[k], ".4f" if k == "mse" else ".3f") for k in paper.RECONSTRUCTION_METRICS),
                     *["—"] * 7])
        classes.append("paper")
    if summary is None:
        note = ("Not evaluated for this run: <code>dva eval mode=reconstruction input=VIDEOS output=OUT "
                "model.checkpoint=…</code> adds our numbers.")
    else:
        for label, steps, means in method_tables(summary):
            rows.append([html.esc(f"ours ({label} inversion)"), steps,
                         html.number(means.get("ssim_zero_padded")), html.number(means["ms_ssim"]),
                         html.number(means["lpips"]), html.number(means["mse"], ".4f"),
                         html.number(means["psnr"], ".2f"), html.number(means["ssim"]),
                         html.number(means.get("rel_x0_error"), ".4f"), html.number(means.get("inversion_calls"), "d"),
                         html.number(means.get("decode_calls"), "d"), html.number(means.get("seconds_per_frame"), ".2f"),
                         str(means["frames"])])
            classes.append("ours")
        model = summary["model"]
        lpips = summary.get("lpips_skipped")
        trend = "falls" if summary.get("error_falls_with_steps") else "does <b>not</b> fall"
        note = (f"Ours: model <code>{html.esc(model['name'])}</code> at {model['image_size']} px. SSIM as the "
                "authors' evaluation computes it (window zero-padded at the border, like the paper's numbers); "
                "SSIM valid: only where the whole window fits (Wang et al.). MS-SSIM over "
                f"{summary['ms_ssim_scales']} scale(s) (the paper: 5 at 256 px); MSE {trend} as N grows. "
                "Rel. x0 error: ‖x̂0 − x0‖/‖x0‖. UNet calls per frame: a first edit costs inversion + one decode, a "
                "further edit one decode; seconds per frame are inversion + one decode."
                + (f" LPIPS skipped: {html.esc(lpips)}." if lpips else ""))
    headers = ["Method", "N", "SSIM ↑", "MS-SSIM ↑", "LPIPS ↓", "MSE ↓", "PSNR ↑", "SSIM valid ↑", "Rel. x0 error ↓",
               "Inversion calls", "Decode calls", "s / frame", "Frames"]
    return (f"<h3>Reconstruction</h3>{html.table(headers, rows, classes)}"
            f'<p class="note">{note}</p>' + _identity_edit_section(summary))


def _identity_edit_section(summary: Optional[dict]) -> str:
    """Per method and N: how far an identity edit decoded from the same x_T moves to its target, and how steady."""
    edit = (summary or {}).get("identity_edit")
    if not edit:
        return ""
    rows = [[html.esc(label), steps, html.number(means.get("id_cos_target")), html.number(means.get("id_cos_source")),
             html.number(means.get("tl_id")), html.number(means.get("tg_id")),
             html.number(means.get("inversion_calls", 0) + means.get("decode_calls", 0), "d")]
            for label, steps, means in method_tables(summary)]
    note = (f"Each x_T also decoded with the mean z_id of <code>{html.esc(edit['target'])}</code>; identity network "
            f"<code>{html.esc(edit['kind'])}</code> on {edit['crop_size']} px crops. A method that reconstructs well "
            "but ignores the edit shows a lower cosine to the target. TL-ID / TG-ID on the aligned crops against "
            "the source's (1.0 = as consistent as the source).")
    headers = ["Inversion", "N", "cos → target ↑", "cos → source", "TL-ID", "TG-ID", "First-edit calls"]
    return (f"<h3>Identity edit from the same x_T</h3>{html.table(headers, rows, text_columns=[0])}"
            f'<p class="note">{note}</p>')


def _frame_cosines(summary: Optional[dict]) -> dict[tuple[str, str], np.ndarray]:
    """(video_id, edit_id) → per-frame source-vs-edit cosine (NaN without a face), from the edit evaluation."""
    table = read_table(summary, "frames") if summary else None
    if table is None:
        return {}
    out: dict[tuple[str, str], list] = {}
    for row in sorted(table.to_pylist(), key=lambda r: (r["video_id"], r["edit_id"], r["frame"])):
        out.setdefault((row["video_id"], row["edit_id"]), []).append(
            np.nan if row["cosine"] is None else row["cosine"])
    return {k: np.asarray(v, float) for k, v in out.items()}


def _track(output_prefix: str, video_id: str):
    try:
        return LatentStore(output_prefix, video_id).load_largest_track()
    except DvaError:  # the job kept no latents: stills without the face close-up
        return None


def _column(folder: ReportFolder, label: str, uri: str, frames: int, track, name: str) -> str:
    """One video's figure: a player whose poster is the middle frame, and that frame's aligned face."""
    try:
        cut = stills(uri, frames, track)
    except Exception as err:  # an unreadable output is shown as such; the report goes on
        return html.figure(f"{html.esc(label)}<br><span class='failed'>cannot read: "
                           f"{html.esc(redact(err))}</span>")
    poster = folder.write(f"stills/{name}.frame.png", cut["frame"])
    media = [html.video(folder.link(uri, f"{name}{posixpath.splitext(uri)[1] or '.mp4'}"), poster)]
    if "face" in cut:
        media.append(html.img(folder.write(f"stills/{name}.face.png", cut["face"]), f"{label}: aligned face",
                              "face"))
    return html.figure(f"<b>{html.esc(label)}</b><br>{html.esc(redact(uri))}", *media)


def _video_section(folder: ReportFolder, output_prefix: str, rows: list[dict], pairs: dict, cosines: dict,
                   network: str) -> str:
    video, video_id = rows[0]["video"], rows[0]["video_id"]
    ok = [r for r in rows if r["status"] == "ok" and r["edit"]]
    parts = [f"<h3>{html.esc(posixpath.basename(video))}</h3>"]
    if ok:
        frames = ok[0]["frames"]
        track = _track(output_prefix, video_id)
        columns = [_column(folder, "source", video, frames, track, f"{video_id}/source")]
        columns += [_column(folder, r["edit"], r["output"], frames, track, f"{video_id}/{r['edit_id']}")
                    for r in ok]
        parts.append(f'<div class="grid">{"".join(columns)}</div>')
    metrics = []
    for r in rows:
        p = pairs.get((video_id, r["edit_id"]), {})
        status = "eval failed" if p.get("status") == "failed" else r["status"]
        metrics.append([html.esc(r["edit"] or "(encode only)"), f'<span class="{html.esc(r["status"])}">'
                        f"{html.esc(status)}</span>", str(r["frames"] or "—"), html.number(r["seconds"], ".1f"),
                        html.number(p.get("tl_id")), html.number(p.get("tg_id")), html.number(p.get("flicker")),
                        html.number(p.get("id_cosine"))])
    headers = ["Edit", "Status", "Frames", "Job seconds", "TL-ID", "TG-ID", "Flicker", "ID cosine to source"]
    parts.append(html.table(headers, metrics, text_columns=(0, 1)))
    curves = {r["edit"]: cosines[(video_id, r["edit_id"])] for r in ok if (video_id, r["edit_id"]) in cosines}
    if curves:
        try:
            from dva.report.plots import identity_plot

            png = identity_plot(curves, posixpath.basename(video), network)
            parts.append(html.img(folder.write(f"plots/{video_id}.identity.png", png),
                                  "per-frame identity similarity of each edit to the source"))
        except ImportError:
            parts.append('<p class="note">Per-frame identity plot skipped: matplotlib is not installed.</p>')
    return f"<section>{''.join(parts)}</section>"


def _faces_entry(video: str, summary: dict) -> str:
    """One video's face tracks (frames, detections, size) and how far apart their identities are."""
    tracks = summary["tracks"]
    rows = [[str(t["index"]), f'{t["first"]}–{t["last"]}', f'{t["detected"]} of {t["last"] - t["first"] + 1}',
             html.number(t["size"], ".0f")] for t in tracks]
    distances = np.asarray(summary["identity_distance"], float).reshape(len(tracks), len(tracks))
    pairs = distances[np.triu_indices(len(tracks), k=1)]
    note = f"{len(tracks)} face track(s) in {summary['num_frames']} frames."
    if pairs.size:
        note += (f" Identity distance between tracks (1 − cosine of mean z_id): largest {pairs.max():.3f}, "
                 f"smallest {pairs.min():.3f}.")
    return (f"<h3>{html.esc(posixpath.basename(video))}</h3>"
            f"{html.table(['Track', 'Frames', 'Detected frames', 'Face size (px)'], rows)}"
            f'<p class="note">{note}</p>')


def _faces_section(output_prefix: str, rows: list[dict]) -> str:
    """"Faces found": the tracks of each video whose job wrote `tracks.json`; nothing for outputs without any."""
    entries = []
    for video_id, video in sorted({(r["video_id"], r["video"]) for r in rows}, key=lambda pair: pair[1]):
        try:
            summary = read_tracks_summary(output_prefix, video_id)
        except DvaError as err:  # an unreadable summary is shown as such; the report goes on
            entries.append(f"<h3>{html.esc(posixpath.basename(video))}</h3>"
                           f'<p class="failed">cannot read its face tracks: {html.esc(redact(err))}</p>')
            continue
        if summary is not None:
            entries.append(_faces_entry(video, summary))
    return "<h2>Faces found</h2>" + "".join(entries) if entries else ""


def _random_weights_warning(rows: list[dict], reconstruction: Optional[dict]) -> str:
    """A banner over the page when any output, or the reconstruction evaluation, was made by a UNet with random
    weights (`random_weights: true`): such a UNet returns its input, so those results are no edits and no scores."""
    made = sum(bool(r["random_weights"]) for r in rows)
    parts = []
    if made:
        parts.append(f"{made} of the {len(rows)} manifest row(s) were made with <code>random_weights: true</code>")
    if reconstruction is not None and reconstruction["model"].get("random_weights"):
        parts.append("the reconstruction evaluation ran with <code>random_weights: true</code>")
    if not parts:
        return ""
    return (f'<p class="warning">Random weights: {"; ".join(parts)}. A UNet with random weights (no '
            "<code>model.checkpoint</code>) returns every input unchanged: these outputs are not edits and these "
            "scores are not a model's (a test, rehearsal or benchmark run).</p>")


def _failures_section(rows: list[dict], pairs: dict) -> str:
    failed = [[html.esc(redact(r["video"])), html.esc(r["edit"] or "—"), "edit job",
               f'<span class="error">{html.esc(r["error"])}</span>'] for r in rows if r["status"] == "failed"]
    failed += [[html.esc(redact(p["video"])), html.esc(p["edit"]), "evaluation",
                f'<span class="error">{html.esc(p["error"])}</span>'] for p in pairs.values()
               if p["status"] == "failed"]
    if not failed:
        return "<h2>Failures</h2><p>None.</p>"
    return f"<h2>Failures</h2>{html.table(['Video', 'Edit', 'Stage', 'Error'], failed, text_columns=(0, 1, 2, 3))}"


def write_edit_report(output_prefix: str, report_prefix: Optional[str] = None,
                      eval_summary: str | Sequence[str] | None = None) -> str:
    """Write the HTML report of the edit run under `output_prefix`; return the URI of its index.html.

    `report_prefix` defaults to `<output_prefix>/report`. `eval_summary` names `dva eval` summaries (files or
    their folders); by default those under `<output_prefix>/eval/` are used when they exist.
    """
    output_prefix = str(output_prefix).rstrip("/")
    folder = ReportFolder(report_prefix or join(output_prefix, "report"))
    rows = sorted(read_manifest(output_prefix).to_pylist(), key=lambda r: (r["video"], r["edit"]))
    summaries = _summaries(output_prefix, eval_summary)
    edit_eval = summaries.get("edit")
    results = read_table(edit_eval, "results") if edit_eval else None
    pairs = {(p["video_id"], p["edit_id"]): p for p in (results.to_pylist() if results is not None else [])}
    cosines = _frame_cosines(edit_eval)
    network = edit_eval["identity"]["kind"] if edit_eval else ""

    ok = sum(r["status"] == "ok" for r in rows)
    header = (f"<h1>Edit report</h1><p>Output <code>{html.esc(redact(output_prefix))}</code>: "
              f"{len({r['video_id'] for r in rows})} videos, {ok} (video, edit) pairs done, "
              f"{len(rows) - ok} failed. Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>")
    summary = ("<h2>Summary next to the paper</h2>" + _temporal_section(edit_eval)
               + _reconstruction_section(summaries.get("reconstruction")))
    videos = [_video_section(folder, output_prefix, list(group), pairs, cosines, network)
              for _, group in itertools.groupby(rows, key=lambda r: r["video_id"])]
    body = (header + _random_weights_warning(rows, summaries.get("reconstruction")) + summary + "<h2>Videos</h2>"
            + "".join(videos) + _faces_section(output_prefix, rows) + _failures_section(rows, pairs))
    folder.write("index.html", html.page("dva edit report", body).encode())
    return join(folder.prefix, "index.html")


def main(argv: Optional[list[str]] = None) -> int:
    """`dva report OUTPUT_PREFIX [--eval SUMMARY ...] [--out REPORT_PREFIX] [--check]`."""
    parser = command_parser("dva report", __doc__.splitlines()[0])
    parser.add_argument("output_prefix", help="the edit job's output prefix (local folder or s3://...)")
    parser.add_argument("--eval", action="append", default=None, metavar="SUMMARY",
                        help="a `dva eval` summary.json (or its folder); repeatable; default: OUTPUT/eval/*")
    parser.add_argument("--out", default=None, help="report folder (default OUTPUT/report)")
    parser.add_argument("--check", action="store_true", help="then check that every file the page references exists")

    def run(args) -> int:
        if not exists(join(args.output_prefix, "manifest")):
            raise StorageError(f"{args.output_prefix} holds no edit results (no manifest/ under it); pass the "
                               "`output=` of a `dva edit` run")
        index = write_edit_report(args.output_prefix, args.out, args.eval)
        print(index)
        if not args.check:
            return EXIT_OK
        from dva.report.check import missing_references

        missing = missing_references(index)
        for ref in missing:
            print(f"dva report: missing: {shown(ref)}", file=sys.stderr)
        return EXIT_FAILED if missing else EXIT_OK

    return run_command(parser, argv, run)
