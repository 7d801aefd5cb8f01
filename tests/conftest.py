"""Fixtures every test directory can use, and the hooks that split the suite over xdist workers."""

import pytest

from tests.parallel import forget_terminal_size, share_cores
from tests.postgres import backend, postgres_database, postgres_server, store_location  # noqa: F401
from tests.s3_server import adapter_store, s3_endpoint  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    forget_terminal_size()
    share_cores()
