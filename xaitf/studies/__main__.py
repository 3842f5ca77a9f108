"""``python -m xaitf.studies <name> [--quick] [--out results] ...``: reproduce one study.

Examples::

    python -m xaitf.studies --list
    python -m xaitf.studies center_pixel --quick
    python -m xaitf.studies interventional --data-dir ../shared/data
    python -m xaitf.studies interventional --set interventional.n_samples=50 --seed 1

Each run writes ``<out>/<name>/<YYYYmmdd-HHMMSS>/`` (report.md and report.html, JSON, PNGs), points
``<out>/<name>/latest`` at it and then rewrites ``<out>/index.html`` (every study and run); earlier runs are never overwritten. The folder is filled under a
hidden name (``.<YYYYmmdd-HHMMSS>.partial``) and renamed, then ``latest`` moved, only when the study
has finished: a failed run leaves the earlier runs and ``latest`` exactly as they were (its files
are removed; with ``--debug`` they are kept as ``.<YYYYmmdd-HHMMSS>.failed`` and named on stderr).
``--quick`` is a small run (under about 2 minutes on 2 CPU cores) with the same outputs; without it
the study's real sizes are used.
User errors end with one line on stderr and exit code 1.
"""
import sys

import xaitf  # noqa: F401  (TF_USE_LEGACY_KERAS before tensorflow)
from xaitf import cli
from xaitf.studies import STUDIES, run_study


def build_parser():
    p = cli.ArgumentParser(
        prog="python -m xaitf.studies",
        description="Reproduce one of xaitf's studies: figures, tables, report.md and JSON under "
                    "<out>/<study>/<timestamp>/.")
    p.add_argument("study", nargs="?", help=f"which study: {', '.join(STUDIES)}")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--quick", action="store_true",
                   help="small run (minutes on a CPU) with the same outputs; says what it shrinks")
    p.add_argument("--out", default="results", help="output root (default results/)")
    p.add_argument("--data-dir", default=None,
                   help="offline data folder (default $XAITF_DATA_DIR; e.g. ../shared/data)")
    p.add_argument("--models-dir", default="models",
                   help="where create_model.py put the zoo (default models/); a missing model is "
                        "built or trained in the run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--unsafe-model", action="store_true",
                   help="allow model files in --models-dir to run Python code stored in them "
                        "(Lambda layers) while they load; only for files you trust (default: "
                        "such files are refused)")
    cli.add_common_args(p)
    return p


def _summary(name):
    import importlib.util

    spec = importlib.util.find_spec(STUDIES[name])
    if spec is None or not spec.origin:
        return "(module missing)"
    import ast

    with open(spec.origin) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list:
        for name in STUDIES:
            print(f"  {name:<16} {_summary(name)}")
        return 0
    if not args.study:
        raise cli.CliError(f"no study given: python -m xaitf.studies NAME (valid: {', '.join(STUDIES)})")
    if args.study not in STUDIES:
        raise cli.CliError(f"unknown study {args.study!r}; valid: {', '.join(STUDIES)}")
    from pathlib import Path

    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise cli.CliError(f"--data-dir {args.data_dir}: no such folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise cli.CliError(f"--out {out} exists and is not a folder")
    args.applied = cli.apply_sets(args.sets, seed=args.seed, batch_size=args.batch_size)
    from xaitf import settings as S

    args.progress = bool(S.GLOBAL["progress"]) and not args.no_progress
    if args.seed is None:
        args.seed = int(S.GLOBAL["seed"])
    args.argv = list(sys.argv[1:] if argv is None else argv)
    cli.quiet_tensorflow()
    _, folder = run_study(args.study, args)     # write-then-move: published only on success
    if folder:
        from xaitf import reports

        index = reports.update_index(out)      # results/index.html lists the new run (atomic)
        print(f"done: {folder}/report.md\nreport: {folder}/report.html\nindex: {index}")
    return 0


if __name__ == "__main__":
    cli.run(main)
