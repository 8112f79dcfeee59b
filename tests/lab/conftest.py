"""Lab fixtures (see tests/labfixture.py for the plain context manager).

- `lab`: a running 3-host lab with the default components (control plane, agent,
  netproxy: real processes), removed after the test and checked gone.
- `cp_lab`: the same with the control plane only (Raft tests: quicker, and
  nothing else on the hosts).
- `make_lab(**kwargs)`: more labs (`running_lab` arguments); all removed after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corral.lab import Lab
from tests.labfixture import running_lab


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    with contextlib.ExitStack() as stack:
        def make(**kwargs: Any) -> Lab:
            kwargs.setdefault("show_logs", True)
            return stack.enter_context(running_lab(**kwargs))

        yield make


@pytest.fixture
def lab() -> Iterator[Lab]:
    with running_lab(show_logs=True) as made:
        yield made


@pytest.fixture
def cp_lab() -> Iterator[Lab]:
    with running_lab(components=("controlplane",), show_logs=True) as made:
        yield made
