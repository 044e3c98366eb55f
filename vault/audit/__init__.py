"""The audit log: pure entry, chain, checkpoint and verification logic, plus the appender."""
