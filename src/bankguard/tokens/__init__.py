"""Access tokens: strict JWS/JWT verification, key sets, introspection, the verified-token cache."""
