"""Open WebUI 0.12.4: the user mapping, the launcher, and subject sync."""
