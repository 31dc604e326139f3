"""The programs switch off numpy's transparent-huge-page advice unless the user chose it."""
import pytest

np_multiarray = pytest.importorskip("numpy.core.multiarray")
if not hasattr(np_multiarray, "_set_madvise_hugepage"):
    pytest.skip("this numpy has no huge-page switch", allow_module_level=True)

from polishplugin.programs.cli import no_hugepage_advice  # noqa: E402


@pytest.fixture
def restore():
    before = np_multiarray._set_madvise_hugepage(True)
    yield
    np_multiarray._set_madvise_hugepage(before)


def test_advice_switched_off_by_default(restore, monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    no_hugepage_advice()
    assert np_multiarray._set_madvise_hugepage(True) is False     # returns the previous state


def test_users_choice_is_kept(restore, monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    no_hugepage_advice()
    assert np_multiarray._set_madvise_hugepage(True) is True
