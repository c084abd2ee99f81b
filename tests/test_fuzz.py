"""Randomized end-to-end cases (tests/fuzzing.py): a fixed set of seeds per suite run.

``python -m bench.e2e.fuzz`` runs 1000 cases (or any number, from any seed) on demand.
"""

import pytest

from fuzzing import run_case, sample_case

SUITE_CASES = 48
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("seed", range(SUITE_CASES))
def test_random_case_matches_plain_greedy(seed):
    run_case(sample_case(seed))
