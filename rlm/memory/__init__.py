"""Swarm memory: shared notes, memories and docs in DuckDB."""

__all__: list[str] = []
