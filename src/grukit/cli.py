"""The ``grukit`` command line (also ``python -m grukit``): ``demo``, ``forecast``, ``predict``,
``explain``. Every error, from a bad option to bad data, ends the command with one line on stderr
(``grukit <command>: error: ...``) and exit code 2; no traceback (set GRUKIT_TRACEBACK=1 to see
one)."""
import argparse
import os
import sys


def number(convert, accept, expected):
    """An argparse type: ``convert(text)``, refused unless ``accept(value)``, with the message
    "expected <expected>, got '<text>'"."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = number(int, lambda v: v >= 1, "a positive integer")


class _Parser(argparse.ArgumentParser):
    """argparse, with each usage error on one line that points to --help."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser():
    parser = _Parser(prog="grukit", description="Recurrent networks on NumPy.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"grukit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="the seed's experiment: SimpleRNN vs LSTM vs GRU")
    demo.add_argument("--seeds", type=positive_int, default=5, help="runs per model (default 5)")
    demo.add_argument("--epochs", type=positive_int, default=200, help="epochs (default 200)")
    demo.add_argument("--units", type=positive_int, default=32, help="recurrent units (default 32)")
    from .forecast.commands import add_commands
    parser._subcommands = {"demo": demo, **add_commands(sub)}
    return parser


def _one_line(e):
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename!r}" if e.filename else ""
        return f"{e.strerror}{where}; check the path and its permissions."
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser._subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    from .forecast._optional import MissingExtraError
    try:
        if args.command == "demo":
            from . import demo
            demo.run(seeds=args.seeds, epochs=args.epochs, units=args.units)
        else:
            from .forecast.commands import run
            return run(args)
    except (ValueError, OSError, MissingExtraError) as e:
        if os.environ.get("GRUKIT_TRACEBACK"):     # for debugging: the full traceback
            raise
        print(f"grukit {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grukit {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
