"""Speed benchmarks, each ours against a named reference in one run; run from the repository root as
`python -m benchmarks.<name>` (README, "Benchmarks")."""
