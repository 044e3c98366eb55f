"""Pure decisions: who may do what, which scopes mean which requests. Deny by default."""
