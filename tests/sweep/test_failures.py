"""Failure accounting on its own (sweep/failures.py): whose fault a failure is, and what
follows. The searcher's use of it, with the real ledger and Ray, is tested in
test_worker_deaths.py and test_ledger_core.py."""

from __future__ import annotations

from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.failures import (
    CELL_DEATHS,
    FAIL_FAST_AFTER,
    FAILURE,
    INFRASTRUCTURE_RETRIES,
    Failures,
)
from sparse_transfer.sweep.plans import SEARCH, CellPlan, TrialKey

FIRST, OTHER = TrialKey(0, SEARCH, 0), TrialKey(0, SEARCH, 1)


def _plan() -> CellPlan:
    return CellPlan(Cell("u", "digits_5to9", "full", "quickstart_cnn", "gmp", 0.9, "x"), {}, {})


def _died(failures: Failures, plan: CellPlan, attrs: dict, reached: int, key=FIRST):
    """The trial reported epoch `reached`, then its worker died."""
    failures.reported(key, reached)
    return failures.died(plan, key, attrs)


def test_a_cell_fails_by_name_once_past_its_own_failures_and_deaths_do_not_count():
    failures, plan = Failures(max_failures_per_cell=2), _plan()
    assert failures.search_failed(plan, {FAILURE: "infrastructure", "error": "lost"}) == ""
    assert plan.failures == 0
    assert failures.search_failed(plan, {FAILURE: "error", "error": "boom"}) == ""
    assert failures.search_failed(plan, {FAILURE: "diverged", "error": "nan"}) == ""
    why = failures.search_failed(plan, {FAILURE: "error", "error": "boom again"})
    assert why == "3 search trials failed (limit 2); the first: boom again"
    plan.failed = why
    assert failures.search_failed(plan, {FAILURE: "error"}) == "", "a cell fails once"


def test_fail_fast_counts_errors_before_any_success_and_never_divergence():
    failures, plan = Failures(max_failures_per_cell=100), _plan()
    for _ in range(FAIL_FAST_AFTER):
        failures.errored(plan, {FAILURE: "diverged"})
    assert not failures.fail_fast and failures.own_failures == 0
    for n in range(FAIL_FAST_AFTER):
        assert not failures.fail_fast
        failures.errored(plan, {FAILURE: "error", "error": f"e{n}"})
    assert failures.fail_fast and failures.first_error == "u/digits_5to9/full: e0"

    after_a_success = Failures(max_failures_per_cell=100)
    after_a_success.succeeded()
    for _ in range(2 * FAIL_FAST_AFTER):
        after_a_success.errored(plan, {FAILURE: "error"})
    assert not after_a_success.fail_fast


def test_deaths_retry_while_the_trial_progresses_then_fail_it_then_its_cell():
    failures, plan = Failures(max_failures_per_cell=2), _plan()
    attrs: dict = {}
    for epoch in range(1, 4):  # died after getting further each time: always a first death
        death = _died(failures, plan, attrs, epoch)
        attrs = death.counts
        assert (death.retry, death.trial_fails, death.cell_fails) == (1, "", "")
    assert attrs == {"deaths": 3, "deaths_in_a_row": 1, "died_at": 3}
    for n in range(2, INFRASTRUCTURE_RETRIES + 1):  # died again at the same epoch
        death = _died(failures, plan, attrs, 3)
        attrs = death.counts
        assert death.retry == n
    death = _died(failures, plan, attrs, 3)
    assert death.retry == 0 and death.cell_fails == ""
    assert (
        death.trial_fails
        == f"its worker died {INFRASTRUCTURE_RETRIES + 1} times in a row at epoch 3"
    )

    while plan.deaths < CELL_DEATHS:
        _died(failures, plan, {}, 1, OTHER)
    death = _died(failures, plan, {}, 1, OTHER)
    expected = f"its trials' workers died {CELL_DEATHS + 1} times (limit {CELL_DEATHS})"
    assert (death.retry, death.trial_fails, death.cell_fails) == (0, expected, expected)
    plan.failed = expected
    assert _died(failures, plan, {}, 1, OTHER).cell_fails == "", "a cell fails once"
