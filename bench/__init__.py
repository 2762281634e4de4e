"""Benchmarks: ``python -m bench`` runs them all on redis-servers it starts itself."""
