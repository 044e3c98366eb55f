"""The delegation-token contract (SPEC §5), written once: claims, signing, verification."""
