"""Torch-free renderers of report.json: markdown (CI summaries), JUnit XML (gates), self-contained HTML."""

from prunekit.reporting.html import render_report_html
from prunekit.reporting.jobs_page import render_jobs_page
from prunekit.reporting.junit import render_junit, render_junit_failure
from prunekit.reporting.markdown import render_failure_markdown, render_markdown

__all__ = [
    "render_failure_markdown",
    "render_jobs_page",
    "render_junit",
    "render_junit_failure",
    "render_markdown",
    "render_report_html",
]
