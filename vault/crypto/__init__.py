"""The only package that touches key material: canonical JSON, base64url, envelopes, keys."""
