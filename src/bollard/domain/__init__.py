"""Pure model of Bollard: entities, state enums, transition tables, errors.

This package imports nothing else of bollard.
"""
