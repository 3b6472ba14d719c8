"""GSM8k accuracy benchmark CI: matrix.yaml -> nox sessions -> served model -> lm-eval -> session JSON."""

__version__ = "0.1.0"
