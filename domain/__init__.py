"""Pure business rules: no I/O, no frameworks, standard library only."""
