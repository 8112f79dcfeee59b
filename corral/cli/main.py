"""`corral`: the command line client, shaped like kubectl.

This module only assembles the verbs (one module per group under corral/cli/)
and turns every failure into one `error: ...` line on stderr and exit code 1.
A verb registers its parser with `register(subparsers, common)` and sets
`run=fn(ctx: Context) -> int`; verbs registered by other modules (the lab's)
may set `func=fn(args) -> int | None` instead.

Connection flags (`-s/--server`, `-n/--namespace`, `--request-timeout`) are
accepted before or after the verb.

Threads model: main thread only (see context.py for `exec -i`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from corral.cli import apply, cluster, delete, describe, get, nodes, pods, rollout
from corral.cli.context import Context, UsageError
from corral.cli.objects import parse_duration
from corral.errors import CorralError

VERBS = (get, describe, apply, delete, cluster, pods, nodes, rollout)

DESCRIPTION = """\
Corral's command line: apply Kubernetes-style manifests and inspect the cluster.

Where the control plane is: --server (comma-separated or repeated), else
$CORRAL_SERVER, else the config file ($CORRAL_CONFIG or ~/.corral/config.yaml,
with `servers: [...]` and `namespace: ...`). A dead endpoint is skipped.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors become one `error:` line and exit 1, as every other failure."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def common_flags() -> argparse.ArgumentParser:
    # SUPPRESS so a flag given before the verb is not reset by the verb's parser.
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("-s", "--server", action="append", default=argparse.SUPPRESS,
                   metavar="ENDPOINT",
                   help="control plane endpoint(s): HOST:PORT or unix:/path (comma-separated "
                        "or repeated)")
    g.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                   help="namespace (default: the config file's, else default)")
    g.add_argument("--request-timeout", type=parse_duration, default=argparse.SUPPRESS,
                   metavar="DURATION",
                   help="per-call deadline (e.g. 10s); also ends `get -w`")
    return common


def build_parser(verb: str | None = "lab") -> argparse.ArgumentParser:
    """The whole parser. The lab's verbs import netlink and process libraries that
    cost most of a second: they are loaded only when `verb` is "lab"."""
    common = common_flags()
    parser = _Parser(prog="corral", parents=[common], description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    for module in VERBS:
        module.register(sub, common)
    if verb == "lab":
        _register_lab(sub)
    else:
        sub.add_parser("lab", help="a multi-host Corral cluster on this machine "
                                   "(see `corral lab --help`)")
    return parser


_VALUE_FLAGS = ("-s", "--server", "-n", "--namespace", "--request-timeout")


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb in argv: the first word that is neither a connection flag nor its value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUE_FLAGS:
            skip = True
        elif word == "--":
            return None
        elif not word.startswith("-"):
            return word
    return None


def _register_lab(sub: Any) -> None:
    """`corral lab ...` lives in corral/cli/lab.py (the lab's own module) when present.
    A broken lab module must not take the rest of the CLI down with it."""
    try:
        from corral.cli import lab
    except ModuleNotFoundError as err:
        if err.name == "corral.cli.lab":
            return
        _lab_unavailable(sub, err)
        return
    except Exception as err:
        _lab_unavailable(sub, err)
        return
    lab.register(sub)


def _lab_unavailable(sub: Any, err: BaseException) -> None:
    p = sub.add_parser("lab", help="(unavailable) a multi-host lab on this machine")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(ctx: Context) -> int:
        raise CorralError(f"corral lab is unavailable: {type(err).__name__}: {err}")

    p.set_defaults(run=run)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse, except that for verbs running a command (`exec POD -- CMD ...`)
    everything after the first `--` is the command, flags included."""
    if "--" in argv:
        cut = argv.index("--")
        head = parser.parse_args(argv[:cut])
        if getattr(head, "takes_command", False):
            head.command = argv[cut + 1:]
            head.command_after_dashes = True
            return head
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stdin: IO[str] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    err_stream = stderr if stderr is not None else sys.stderr
    ctx: Context | None = None
    try:
        words = list(argv) if argv is not None else sys.argv[1:]
        parser = build_parser(verb_of(words))
        args = parse(parser, words)
        if getattr(args, "verb", None) is None:
            parser.print_help(stdout if stdout is not None else sys.stdout)
            return 0
        ctx = Context(args, stdout=stdout, stderr=stderr, stdin=stdin, env=env)
        run = getattr(args, "run", None)
        if run is not None:
            return int(run(ctx) or 0)
        return int(args.func(args) or 0)
    except CorralError as err:
        err_stream.write(f"error: {err}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
