"""Collects validation problems, each with the field path it is about.

A validator appends (path, message) pairs and carries on, so a user sees every
problem of an object at once, as Kubernetes reports them; `raise_if_any` turns
them into one `corral.errors.Invalid` whose `field` is the first path.
Messages never quote Secret values: validators pass key names only.
"""

from __future__ import annotations

from corral.errors import CorralError, Invalid


class Errors:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def required(self, path: str, what: str = "") -> None:
        self.add(path, f"required value{': ' + what if what else ''}")

    def unsupported(self, path: str, value: object, supported: tuple[str, ...] | list[str]) -> None:
        options = ", ".join(f'"{s}"' for s in supported)
        self.add(path, f"unsupported value {value!r}: supported values: {options}")

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, what: str, cls: type[CorralError] = Invalid) -> None:
        """Raise `cls` (Invalid, or FailedPrecondition for immutable fields) naming
        `what` ('Pod "default/web"') and every problem; `field` is the first path."""
        if not self.items:
            return
        path, reason = self.items[0]
        listed = "; ".join(f"{p}: {m}" if p else m for p, m in self.items)
        message = f"{what} is invalid: {listed}"
        exc = Invalid(reason, path) if cls is Invalid else cls(message)
        exc.message = message
        exc.args = (message,)
        exc.field = path  # type: ignore[attr-defined]
        raise exc
