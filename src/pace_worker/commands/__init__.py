"""One module per command: its request, its steps, its report builders and its typed result."""
