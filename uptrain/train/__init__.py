"""Uptraining: the budget, the data, the objective, the Accelerate loop and its checkpoints.

Importing this package is cheap; torch and friends load with the modules that need them.
"""
