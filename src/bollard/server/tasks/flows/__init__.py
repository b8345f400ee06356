"""The kinds of tasks: each a list of steps with their undo, and what its end writes."""
