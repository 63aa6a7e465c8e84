"""Typed httpx clients, one module per service; shared errors and plumbing in base.py."""
