"""Integrations with the applications the vault delegates into."""
