"""One module per CLI subcommand; see ``landscape.cli``."""
