"""Which sessions exist: matrix.yaml read and checked into frozen objects, the combinations it expands to,
their names, `-k`/`-t` selection, what a precision means per framework and vendor, and how a reasoning
model is served and scored.  Pure: no server, no network.

Imports: core.
"""
