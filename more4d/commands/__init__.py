"""CLI sub-commands (see `more4d.cli`), and `parallel`, the torchrun launcher of `generate` and `render`."""
