"""Chaos tests: random VM operations on a real local cluster while a seeded nemesis SIGKILLs
agents and the server; then the invariants of DESIGN.md section 6 are checked."""
