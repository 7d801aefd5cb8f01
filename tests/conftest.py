"""Fixtures every test directory can use."""

from tests.postgres import backend, postgres_database, postgres_server, store_location  # noqa: F401
