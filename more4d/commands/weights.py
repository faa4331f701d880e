"""`more4d weights download|list`: fetch the released MoGe4D weights (Hugging Face / ModelScope) or list them.

`download --dir DIR` puts each repo in DIR/<name> (then pass `--weights DIR` to more4d); without `--dir` the
files go to the standard Hugging Face cache (HF_HOME), where more4d finds them by itself.
"""

from __future__ import annotations

import argparse

from more4d.weights.download import RELEASED_REPOS, download_released, local_folder, missing_patterns


def register(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    names = [repo.name for repo in RELEASED_REPOS]

    download = actions.add_parser("download", help="download the released weights (resumable: rerun to continue)",
                                  description=__doc__.split("\n\n")[1])
    download.add_argument("--source", choices=("hf", "modelscope"), default="hf",
                          help="hub to download from (default: hf; modelscope needs --dir)")
    download.add_argument("--dir", default=None, help="target folder (default: the Hugging Face cache)")
    download.add_argument("--only", nargs="+", action="extend", choices=names, metavar="NAME",
                          help=f"download only these repos: {', '.join(names)}")
    download.add_argument("--revision", default=None,
                          help="branch, tag or commit of every selected repo (default: the latest; use with --only)")

    listing = actions.add_parser("list", help="list the released repos, their files and what is present",
                                 description="list the released repos, their file patterns and what is present")
    listing.add_argument("--dir", default=None, help="folder to check (default: the Hugging Face cache)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.action == "download":
        download_released(args.dir, source=args.source, repos=args.only, revision=args.revision)
        return 0
    return list_released(args.dir)


def list_released(weights_dir: str | None) -> int:
    """Print each repo (name, hubs, status) and its file patterns, marked ok/missing in `weights_dir`."""
    from huggingface_hub import constants

    print(f"released weights in {weights_dir if weights_dir else 'the Hugging Face cache ' + constants.HF_HUB_CACHE}")
    for repo in RELEASED_REPOS:
        folder = local_folder(repo, weights_dir)
        missing = missing_patterns(repo, folder) if folder else list(repo.allow_patterns)
        status = "missing" if folder is None else "incomplete" if missing else "present"
        print(f"{repo.name}  hf: {repo.hf_repo}  modelscope: {repo.modelscope_repo or '-'}  [{status}]")
        for pattern in repo.allow_patterns:
            print(f"  {'missing' if pattern in missing else 'ok':<8} {pattern}")
    return 0
