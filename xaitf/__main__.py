"""``python -m xaitf <command>``: xaitf's command line.

Commands (one argparse subparser each; add new ones in :func:`build_parser`):

* ``run``: explain a dataset with several methods into a resumable HDF5 store
  (:mod:`xaitf.runs`), optionally on Ray and tracked with MLflow.
* ``evaluate``: score methods with metrics (:mod:`xaitf.evaluation_cli`, :func:`xaitf.evaluate`).

Errors are one line on stderr (``error: ...``) with exit code 1; ``--debug`` shows tracebacks.
"""
import sys

from . import cli


def build_parser():
    parser = cli.ArgumentParser(prog="python -m xaitf",
                                description="xaitf: explainability for Keras/TensorFlow models")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=cli.ArgumentParser)
    from . import evaluation_cli, runs

    runs.add_parser(sub)
    evaluation_cli.add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    cli.run(main)
