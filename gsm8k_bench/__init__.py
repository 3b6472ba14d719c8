"""GSM8k accuracy benchmark CI: matrix.yaml -> nox sessions -> served model -> lm-eval -> session JSON.

Subpackages by stage of a run, lowest first; each imports only itself and the stages before it
(tests/test_import_graph.py enforces the order):

    core        errors, line-tracked input files, the session result model and its JSON file
    matrix      matrix.yaml -> the combinations that become sessions
    serving     environments, processes, GPUs, images, weights, containers, frameworks, launchers
    evaluation  lm-eval against the server, the server's metrics and progress
    verdicts    paired statistics, gate, references, promotion, comparisons
    reporting   report, console summary, compare, fleet cost
    fleet       the workflow's plan step, pack, Slurm
    session     one session from plan to JSON, and the nox sessions' bodies
"""

__version__ = "0.1.0"
