"""Fixtures of the integration tests: a throwaway PostgreSQL server."""

from tests.integration.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
