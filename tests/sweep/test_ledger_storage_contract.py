"""Optuna's own storage contract suite against the sweep's ledger storage (the journal storage
over the project's ledger file), run as Optuna runs it against its own storages."""

from __future__ import annotations

import pytest
from optuna.testing.pytest_storages import StorageTestCase

from sparse_transfer.sweep.ledger import Ledger


@pytest.fixture
def storage(tmp_path):
    ledger = Ledger(tmp_path, None, (), "contract")
    yield ledger.storage
    ledger.close()


class TestLedgerStorage(StorageTestCase):
    pass


def test_a_deleted_study_s_name_can_be_used_again(storage):
    from optuna.study import StudyDirection

    first = storage.create_new_study([StudyDirection.MAXIMIZE], "again")
    storage.delete_study(first)
    second = storage.create_new_study([StudyDirection.MAXIMIZE], "again")
    assert storage.get_study_id_from_name("again") == second != first
