"""pytest's settings for the whole repository: how `make test`'s two pytest-xdist workers share the tests."""

import pytest


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Group and order the tests for ``-n 2 --dist loadgroup --no-loadscope-reorder`` (`make test`).

    A test module is one group (one worker runs it, so its module fixtures are built once), and so is
    each chain of the gpu dry run (tests/test_dry_run_book.py). The dry-run chains come first, one to
    each worker, because they are the longest (minutes); the smoke notebooks' test next; then the
    rest, each module to whichever worker is free. Without xdist only the order changes.
    """
    for item in items:
        if item.get_closest_marker("dry_run"):
            item.add_marker(pytest.mark.xdist_group(f"dry-run {item.callspec.id if hasattr(item, 'callspec') else item.name}"))
        else:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

    def rank(item) -> int:
        if item.get_closest_marker("dry_run"):
            return 0
        return 1 if item.nodeid.startswith("tests/test_book_smoke.py") else 2

    items.sort(key=rank)  # stable: the rest keeps the collection order
