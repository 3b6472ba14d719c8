"""What people read: report.md/.png/.html and the CI step summary from a results folder, the session's
closing console summary, `nox -s compare`, and fleet cost (GPU-hours).

Imports: core, matrix, serving, evaluation, verdicts.
"""
