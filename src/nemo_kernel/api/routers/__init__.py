"""Routers of /api/v1, one per resource."""
