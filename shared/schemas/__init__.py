"""Pydantic v2 schemas: the language the services speak (one module per subject)."""
