"""The only package with SQL: tables, engine, chain-locked writes, repositories."""
