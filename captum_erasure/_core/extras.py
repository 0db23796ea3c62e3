"""Install hints for optional dependencies, one wording for every ImportError.

captum-erasure is installed from its checkout (it is not on PyPI), so a hint names the
pinned requirement itself, which pip can always install, and the checkout's extra that holds
it. tests/_core/test_extras.py checks every hint against pyproject.toml's extras.
"""

from __future__ import annotations


def install_hint(extra: str, requirement: str) -> str:
    """``pip install '<requirement>'`` plus the extra of this package that holds it."""
    return (f"pip install '{requirement}' (or, in a checkout of captum-erasure, "
            f"pip install -e '.[{extra}]')")
