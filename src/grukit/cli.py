"""The ``grukit`` command line (also ``python -m grukit``)."""
import argparse
import sys


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="grukit", description="Recurrent networks on NumPy.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"grukit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the seed's experiment: SimpleRNN vs LSTM vs GRU")
    demo.add_argument("--seeds", type=_positive_int, default=5, help="runs per model (default 5)")
    demo.add_argument("--epochs", type=_positive_int, default=200, help="epochs (default 200)")
    demo.add_argument("--units", type=_positive_int, default=32, help="recurrent units (default 32)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from . import demo
            demo.run(seeds=args.seeds, epochs=args.epochs, units=args.units)
    except ValueError as e:
        print(f"grukit {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
