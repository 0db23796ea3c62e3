"""The machinery every method shares: the perturbation engine, the scores, forward hooks, the
one parser of Captum's arguments (:mod:`.inputs`), how models are called and padded
(:mod:`.forwards`) and the text layer (words, encoding, checks).

Imports nothing else of the package (checked by import-linter).
"""
