"""Run Triton kernels interpreted when there is no GPU; one torch thread per xdist worker; compiled steps cached in a temporary folder; the ``one_thread`` fixture.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it must be
set before ``specdec.kernels`` is imported; pytest loads this file first.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    """Under pytest-xdist (``make test``) the workers share the machine's cores: torch takes one
    thread in each, so that no worker's threads wait on another's."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def package_cache(tmp_path_factory):
    """Compiled steps (``compile=True`` on a CPU) go to a folder of the test session's, never the user's cache."""
    os.environ["SPECDEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("specdec-cache"))
    yield


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny models gain nothing from a second thread and
    lose much to it on a busy 2-core machine (20x slower seen under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
