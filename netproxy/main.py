"""Placeholder entry point until its issue lands."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral-netproxy",
                                     description="Not implemented yet.")
    parser.parse_args(argv)
    return 0
