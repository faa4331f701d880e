"""`more4d data download|index`: fetch the released TrajScene-60K archives (ModelScope) and index them.

`download --dir DIR --range 1-100` fetches archives 1 to 100 (`000001_000050.tar.gz` ... `004951_005000.tar.gz`,
50 samples each) with ModelScope's client; rerun to continue. `index DIR` builds the per-archive indexes that
random access needs (one pass over each archive, cached beside it; training and `more4d eval --data` build
missing ones themselves, one archive at a time).
"""

from __future__ import annotations

import argparse

from more4d.data.trajscene60k import NUM_ARCHIVES


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    download = actions.add_parser("download", help="download TrajScene-60K archives from ModelScope (resumable)",
                                  description=__doc__.split("\n\n")[1])
    download.add_argument("--dir", required=True, help="target folder")
    download.add_argument("--range", default=f"1-{NUM_ARCHIVES}", metavar="A-B",
                          help=f"archive numbers to fetch, 1-based (default: all, 1-{NUM_ARCHIVES})")
    download.add_argument("--revision", default=None, help="dataset revision (default: the latest)")

    index = actions.add_parser("index", help="index the archives under DIR and report unreadable ones",
                               description="index the archives under DIR (cached beside them) and count samples")
    index.add_argument("dir", metavar="DIR", help="folder holding the archives or extracted folders")
    index.add_argument("--workers", type=int, default=1, help="archives indexed in parallel (default: 1)")
    index.add_argument("--index-dir", default=None, help="cache the indexes here (default: beside each archive)")
    return parser


def run(args: argparse.Namespace) -> int:
    from more4d.data.trajscene60k import TrajScene60K, download, parse_range
    from more4d.errors import InputError

    if args.action == "download":
        download(args.dir, parse_range(args.range), revision=args.revision)
        return 0
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    dataset = TrajScene60K(args.dir, index_dir=args.index_dir, index_workers=args.workers)
    print(f"{len(dataset)} samples in {args.dir}; {dataset.skip_report()}")
    return 0
