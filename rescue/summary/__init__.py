"""The fleet view: an index of every capture in a directory, and `rescue summary` over it."""
