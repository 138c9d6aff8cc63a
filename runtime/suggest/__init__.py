"""`ftr suggest lr|freeze RECIPE`: measure the recipe's own training on its data, and
write the recipe back with its `lr` line (lr.py: a range test) or its freeze lines
(freeze.py: relative gradient norms) changed, the evidence as comments above them.

The measurements train a throwaway copy of the run's model, seeded from the plan
(measuring.py); recipe_edit.py writes the recipe with the rest of it untouched.
"""
