"""Many sessions at once: the GitHub workflow's plan step and its policy (images, time budget), packing
sessions on one node's GPUs, one Slurm job per session, and collecting the JSON each child wrote.

Imports: core, matrix, serving, evaluation, verdicts, reporting.  A fleet runs sessions as `nox -s`
processes, never by importing session/.
"""
