"""Delegation Vault: short-lived, user-scoped delegation tokens for Open WebUI, audited."""

__version__ = "0.1.0"
