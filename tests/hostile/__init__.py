"""A catalogue of hostile inputs, run through the ASGI and WSGI adapters and over real sockets."""
