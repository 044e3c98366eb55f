"""What the vault does, once: the operations the HTTP API and the CLI both call."""
