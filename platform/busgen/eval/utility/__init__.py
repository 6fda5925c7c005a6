"""The utility part of a suite: does training on synthetic data help a diagnosis classifier?

recipes (what each arm trains on), prep (sets made on the driver before the grid: filtered,
guidance-swept), grid (the Tune grid of arms x seeds and its paired differences), results
(typed records in ``results.json``) and report (the "Recipes and yardstick" section).
"""
