"""Fixtures every test directory can use."""

from tests.postgres import backend, postgres_database, postgres_server, store_location  # noqa: F401
from tests.s3_server import adapter_store, s3_endpoint  # noqa: F401
