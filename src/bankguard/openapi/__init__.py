"""OpenAPI contract enforcement: the spec loaded once into compiled request and response
contracts (:mod:`.contract`), and response data minimisation (:mod:`.minimise`)."""
