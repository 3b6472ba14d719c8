"""A server for one combination, started and always stopped: the shared environments, child processes,
GPU assignment, who owns a run, compile caches, the CPU image, the model weights (and their conversion),
container specs per vendor, server commands per framework, and the launchers (process, Docker, pyxis).

Imports: core, matrix.
"""
