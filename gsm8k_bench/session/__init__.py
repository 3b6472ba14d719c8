"""The top: one gsm8k session from plan to JSON (plan, provenance, run), its command-line options, the
bodies of the nox sessions (noxfile.py only wires them), and a warm server for benchmarks and tests.

Imports: any stage.  Nothing imports session/ but noxfile.py, the benchmarks and the tests.
"""
