"""CLI sub-commands; see `more4d.cli`."""
