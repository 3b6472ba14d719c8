"""The ground every stage stands on: errors a user can act on, input files read with their line
numbers, the session result's typed model, its JSON file (written atomically, masked) and the stub JSON of
a session that never wrote its own.

Imports: nothing else of gsm8k_bench (the package's version excepted).
"""
