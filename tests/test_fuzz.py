"""Randomized end-to-end cases (tests/fuzzing.py): a fixed set of seeds per suite run.

``python -m bench.fuzz`` runs 1000 cases (or any number, from any seed) on demand.
"""

import pytest
import torch

from fuzzing import run_case, sample_case

SUITE_CASES = 48


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and lose much to it on a busy 2-core machine (20x seen)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", range(SUITE_CASES))
def test_random_case_matches_plain_greedy(seed):
    run_case(sample_case(seed))
