"""Evaluation: BEIR runs, metrics, reports, brute-force oracles and benchmarks."""
