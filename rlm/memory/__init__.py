"""Swarm memory: shared notes, memories and docs in DuckDB."""
