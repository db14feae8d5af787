"""Framework helpers. Import the submodule for your framework: ``bankguard.integrations.flask``
or ``bankguard.integrations.fastapi``."""
