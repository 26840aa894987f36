"""Failure accounting: whose fault a failure is (the trial's, its cell's or the whole sweep's),
and what follows. `CellSearch` (search.py) asks; the counts it decides from are the ledger's:
each told trial's outcome and each trial's death counts, read again at every start.

- A trial that fails for its own reasons (an error, a divergent lr) is told FAIL and replaced,
  up to `max_failures_per_cell` search trials; past that, its cell fails by name.
- A trial whose worker dies (a lost node, a killed process) is not at fault: it runs again
  from its saved state, unless it died INFRASTRUCTURE_RETRIES times in a row without getting
  an epoch further, or its cell's trials died CELL_DEATHS times in all.
- The sweep stops when its first FAIL_FAST_AFTER trials all failed with an error and none
  finished: that is a bug or bad data, and every other trial would fail the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sparse_transfer.sweep.plans import CellPlan, TrialKey

__all__ = [
    "CELL_DEATHS",
    "FAILURE",
    "FAIL_FAST_AFTER",
    "INFRASTRUCTURE_RETRIES",
    "Death",
    "Failures",
]

FAILURE = "failure"  # result key of a trial that failed for its own reasons (see trainable)
# Deaths in a row without progress before the trial is told FAIL (it kills its worker itself,
# or cannot start). Deaths after progress (spot nodes taken back) start the count again.
INFRASTRUCTURE_RETRIES = 8
# Deaths of a cell's trials in all before the cell fails by name: every attempt killed at the
# same point (out of memory at some epoch) would otherwise go on forever, one trial after
# another. Counted in the ledger, so a restart does not reset them.
CELL_DEATHS = 3 * INFRASTRUCTURE_RETRIES
FAIL_FAST_AFTER = 3


@dataclass
class Death:
    """What one worker death means for its trial."""

    counts: dict[str, int]  # the trial's death counts, for the ledger
    retry: int = 0  # the attempt in a row it runs again as (0: it does not)
    trial_fails: str = ""  # why the trial is told FAIL, when it is
    cell_fails: str = ""  # why its cell fails, when it does


@dataclass
class Failures:
    max_failures_per_cell: int
    successes: int = 0  # trials told COMPLETE or PRUNED, search or final
    own_failures: int = 0  # trials told FAIL with an error
    first_error: str = ""
    fail_fast: bool = False
    reached: dict[TrialKey, int] = field(default_factory=dict)  # the last epoch each running
    # trial reported: a death after progress is not held against it

    def reported(self, key: TrialKey, epoch: int) -> None:
        self.reached[key] = max(self.reached.get(key, 0), epoch)

    def forget(self, key: TrialKey) -> None:
        """The trial is told: never asked about again (bounded state)."""
        self.reached.pop(key, None)

    def succeeded(self) -> None:
        self.successes += 1

    def search_failed(self, plan: CellPlan, outcome: dict) -> str:
        """A search trial told FAIL: why its cell fails now, or ""."""
        if outcome.get(FAILURE) == "infrastructure":
            return ""  # counted as deaths, not against the cell's failures
        plan.failures += 1
        self.errored(plan, outcome)
        if plan.failures > self.max_failures_per_cell and not plan.failed:
            return (
                f"{plan.failures} search trials failed (limit {self.max_failures_per_cell}); "
                f"the first: {outcome.get('error', '')}"
            )
        return ""

    def errored(self, plan: CellPlan, outcome: dict) -> None:
        """Fail-fast: the sweep's first trials (search or final) all failing with an error; a
        divergent lr is not an error."""
        if outcome.get(FAILURE) != "error":
            return
        self.own_failures += 1
        if not self.first_error:
            self.first_error = f"{plan.cell.id}: {outcome.get('error', 'unknown error')}"
        if self.successes == 0 and self.own_failures >= FAIL_FAST_AFTER:
            self.fail_fast = True

    def died(self, plan: CellPlan, key: TrialKey, attrs: dict) -> Death:
        """A worker death of the trial `key`, whose ledger attributes are `attrs`."""
        reached = self.reached.get(key, 0)
        progressed = reached > attrs.get("died_at", 0)
        in_a_row = 1 if progressed else attrs.get("deaths_in_a_row", 0) + 1
        counts = {
            "deaths": attrs.get("deaths", 0) + 1,
            "deaths_in_a_row": in_a_row,
            "died_at": reached,
        }
        plan.deaths += 1
        if plan.deaths > CELL_DEATHS:
            why = f"its trials' workers died {plan.deaths} times (limit {CELL_DEATHS})"
            return Death(counts, trial_fails=why, cell_fails="" if plan.failed else why)
        if in_a_row <= INFRASTRUCTURE_RETRIES:
            return Death(counts, retry=in_a_row)
        why = f"its worker died {in_a_row} times in a row at epoch {reached}"
        return Death(counts, trial_fails=why)
