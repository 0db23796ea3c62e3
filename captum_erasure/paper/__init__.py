"""Reproductions of the papers' experiments (today: Li, Monroe & Jurafsky 2016)."""
