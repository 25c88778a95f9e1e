"""Static HTML reports of edit runs (`dva report`): stills, players, metrics next to the paper's, failures."""

from dva.report.edit_report import write_edit_report

__all__ = ["write_edit_report"]
