"""Pass or regression: the paired statistics, what makes two runs comparable (protocol), the gate
(references first, then baselines.yaml), the references and their promotion, two runs compared question by
question, sibling cells, and the concurrency levels of one session compared pairwise.

Imports: core, matrix, serving, evaluation.
"""
