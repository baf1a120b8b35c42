"""Held-out evaluation: model perplexity and the reference predictors."""
