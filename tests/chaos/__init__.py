"""Chaos tests: random VM operations on a real local cluster while a seeded nemesis SIGKILLs
agents and the server (or, with three servers on PostgreSQL, the leader, servers holding
agents and owners of running migrations, and cuts servers from the database); then the
invariants of DESIGN.md section 6 are checked."""
