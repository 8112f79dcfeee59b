"""Placeholder: the control plane process lands with issue 2."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    return 0
