"""Mutual TLS: client certificates from the TLS terminator, certificate-bound tokens."""
