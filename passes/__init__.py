"""graphopt's built-in passes (installed as `graphopt_passes`).

Each module registers its passes with `graphopt.register_pass`, the same public API plugins use.
"""
