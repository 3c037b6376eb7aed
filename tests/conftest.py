"""Fixtures shared by the test modules (helpers that are plain functions live in tests/*_fixtures.py)."""
import pytest
from data_fixtures import make_fake_omniglot_root


@pytest.fixture(scope="module")
def fake_omniglot(tmp_path_factory):
    """Both small background zips in the real format (3 generated characters per alphabet); caches in tmp."""
    root = tmp_path_factory.mktemp("omniglot")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMLBOOK_CACHE", str(root / "cache"))
        yield make_fake_omniglot_root(root / "data")
