"""The ``medseg`` command: one subcommand per stage."""
