"""The evaluation report: an HTML page with figures and JSON, and its browser screenshot."""

from metricls.report.browser import screenshot_html
from metricls.report.writer import write_report

__all__ = ["screenshot_html", "write_report"]
