"""Download the released MoGe4D weights (and the Wan2.1 / UniDepth parts they build on) from the Hub.

`RELEASED_REPOS` is the one list of what more4d needs; `download_released` fetches it with
`huggingface_hub.snapshot_download` (or ModelScope's), `released_folders` finds it on disk afterwards.

huggingface_hub (2.4) shows progress bars and, when a connection drops mid-file, resumes that file with a
`Range` request from its last complete 10 MB chunk. A run that is killed loses only the file in progress:
the same command again skips every finished file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from huggingface_hub.utils import filter_repo_objects

from more4d.errors import InputError

Source = Literal["hf", "modelscope"]


@dataclass(frozen=True)
class HubRepo:
    """One released repo: `name` is its local subfolder, `allow_patterns` the files more4d uses (fnmatch)."""

    name: str
    hf_repo: str
    modelscope_repo: str | None
    allow_patterns: tuple[str, ...]


RELEASED_REPOS: tuple[HubRepo, ...] = (
    # the MoGe4D release without its training states (optimizer, checkpoint-* folders)
    HubRepo("MoGe4D", "Yanran21/MoGe4D", "YanranZhang/MoGe4D", (
        "4D-STraG/*.safetensors",
        "4D-STraG/*.json",
        "4D-ViSM/lora_diffusion_pytorch_model.safetensors",
        "VAE/encoder_prompt/pytorch_model.bin",
        "VAE/decoder_prompt/pytorch_model.bin",
        "VAE/vae/pytorch_model.bin",
    )),
    # Wan2.1's VAE, T5 and CLIP encoders; its transformer is not needed (4D-STraG is a full fine-tune)
    HubRepo("Wan2.1-Fun-V1.1-14B-Control", "alibaba-pai/Wan2.1-Fun-V1.1-14B-Control",
            "PAI/Wan2.1-Fun-V1.1-14B-Control", (
                "Wan2.1_VAE.pth",
                "models_t5_umt5-xxl-enc-bf16.pth",
                "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                "google/umt5-xxl/*",
            )),
    # the InP transformer that 4D-ViSM's LoRA applies to
    HubRepo("Wan2.1-Fun-V1.1-14B-InP", "alibaba-pai/Wan2.1-Fun-V1.1-14B-InP", "PAI/Wan2.1-Fun-V1.1-14B-InP", (
        "config.json",
        "diffusion_pytorch_model*.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    )),
    # metric depth for the input image; not mirrored on ModelScope
    HubRepo("unidepth-v2-vitl14", "lpiccinelli/unidepth-v2-vitl14", None, ("config.json", "model.safetensors")),
)

# What huggingface_hub lets through when the Hub cannot be reached (it talks through httpx2).
_UNREACHABLE = (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx2.TransportError)


def select_repos(names: Iterable[str] | None = None) -> tuple[HubRepo, ...]:
    """The `RELEASED_REPOS` named in `names` (all of them if None), in table order."""
    if names is None:
        return RELEASED_REPOS
    names = list(names)
    known = [repo.name for repo in RELEASED_REPOS]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InputError(f"--only expects names among {', '.join(known)}; got {', '.join(unknown) or 'none'}")
    return tuple(repo for repo in RELEASED_REPOS if repo.name in names)


def download_released(
    dir: str | os.PathLike | None = None,
    *,
    source: Source = "hf",
    repos: Iterable[str] | None = None,
    revision: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Download the released weights; returns {repo name: local folder}.

    Args:
        dir: put each repo in `dir/<name>` (pass that `dir` to more4d as `--weights`); None: the standard
            Hugging Face cache (`HF_HOME`, found again by `released_folders(None)`).
        source: "hf" (Hugging Face) or "modelscope" (needs `dir`; repos not mirrored there come from HF).
        repos: names from `RELEASED_REPOS` to fetch (default: all).
        revision: branch, tag or commit of every selected repo (default: the latest; use with `repos`).
        log: receives one line per step (sizes up front, then each finished folder).

    Raises:
        InputError: bad `dir`, `source` or `repos`; offline or unreachable Hub (the message says what to
            copy from a machine with network); a pattern matching nothing; a download that fails midway.
    """
    selected = select_repos(repos)
    if source not in ("hf", "modelscope"):
        raise InputError(f"--source expects hf or modelscope, got {source!r}")
    root = _check_target(dir)
    modelscope_download = None
    if source == "modelscope":
        if root is None:
            raise InputError("--source modelscope needs --dir DIR (ModelScope downloads are found only in a folder)")
        modelscope_download = _modelscope_snapshot_download()
    from_hf = [repo for repo in selected if source == "hf" or repo.modelscope_repo is None]
    if from_hf and constants.is_offline_mode():
        raise InputError(_copy_instructions("HF_HUB_OFFLINE is set, so nothing can be downloaded", from_hf, source))

    # 1) list what will come from Hugging Face, with sizes, before downloading anything
    api = HfApi()
    totals = [0, 0]  # files, bytes
    for repo in from_hf:
        try:
            files = _list_files(api, repo, revision)
        except _UNREACHABLE as exc:
            raise InputError(_copy_instructions(_unreachable(exc), from_hf, source)) from exc
        except HfHubHTTPError as exc:
            raise InputError(f"{repo.hf_repo}: the Hub answered {_one_line(exc)}") from exc
        size = sum(files.values())
        totals = [totals[0] + len(files), totals[1] + size]
        note = " (not on ModelScope: from Hugging Face)" if source == "modelscope" else ""
        log(f"{repo.name}: {len(files)} files, {size / 1e9:.1f} GB{note}")
    if from_hf:
        log(f"total from Hugging Face: {totals[0]} files, {totals[1] / 1e9:.1f} GB "
            f"-> {root if root else 'the Hugging Face cache ' + constants.HF_HUB_CACHE}")

    # 2) download, one repo after the other (each shows its own progress bars)
    folders = {}
    for repo in selected:
        local_dir = root / repo.name if root else None
        patterns = list(repo.allow_patterns)
        try:
            if repo in from_hf:
                folder = snapshot_download(repo.hf_repo, allow_patterns=patterns, local_dir=local_dir,
                                           revision=revision)
            else:
                log(f"{repo.name}: {repo.modelscope_repo} from ModelScope")
                # ModelScope's default revision differs between its versions: pass one only when asked
                pinned = {"revision": revision} if revision else {}
                folder = modelscope_download(repo.modelscope_repo, allow_patterns=patterns,
                                             local_dir=str(local_dir), **pinned)
        except _UNREACHABLE as exc:
            reason = _unreachable(exc) + " (finished files are kept)"
            raise InputError(_copy_instructions(reason, from_hf, source)) from exc
        except OSError as exc:  # HTTP errors, size mismatch, disk full (HfHubHTTPError is an OSError)
            raise InputError(f"downloading {repo.name} failed ({_one_line(exc)}); run the same command again to "
                             "continue: finished files are kept") from exc
        folders[repo.name] = Path(folder)
        log(f"{repo.name} -> {folder}")
    return folders


def released_folders(weights_dir: str | os.PathLike | None, *, repos: Iterable[str] | None = None) -> dict[str, Path]:
    """Where each released repo lives: `weights_dir/<name>`, or (None) its snapshot in the Hugging Face cache.

    Never touches the network. Raises `InputError` naming every missing folder or file pattern.
    """
    found: dict[str, Path] = {}
    problems = []
    for repo in select_repos(repos):
        folder = local_folder(repo, weights_dir)
        missing = missing_patterns(repo, folder) if folder else []
        if folder is None:
            problems.append(f"{repo.name}/ (no such folder)" if weights_dir else repo.name)
        elif missing:
            problems.extend(f"{repo.name}/{pattern}" for pattern in missing)
        else:
            found[repo.name] = folder
    if weights_dir is not None and problems:
        raise InputError(f"--weights {str(weights_dir)!r} lacks {', '.join(problems)}: "
                         f"run `more4d weights download --dir {weights_dir}`")
    if problems:
        raise InputError(f"released weights not downloaded yet ({', '.join(problems)} missing from the Hugging "
                         f"Face cache {constants.HF_HUB_CACHE}): run `more4d weights download`")
    return found


def local_folder(repo: HubRepo, weights_dir: str | os.PathLike | None) -> Path | None:
    """`weights_dir/<name>` or the repo's default-branch snapshot in the Hugging Face cache; None if absent."""
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser() / repo.name
        return folder if folder.is_dir() else None
    try:
        return Path(snapshot_download(repo.hf_repo, allow_patterns=list(repo.allow_patterns), local_files_only=True))
    except IncompleteSnapshotError as exc:  # an interrupted download: return it so the gaps can be named
        return Path(exc.snapshot_path)
    except LocalEntryNotFoundError:
        return None


def missing_patterns(repo: HubRepo, folder: Path) -> list[str]:
    """The `repo.allow_patterns` that match no file under `folder`."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return [pattern for pattern in repo.allow_patterns if not any(filter_repo_objects(files, allow_patterns=pattern))]


def _list_files(api: HfApi, repo: HubRepo, revision: str | None) -> dict[str, int]:
    """{path: size} of the files `repo.allow_patterns` select in the Hub repo, as snapshot_download filters."""
    info = api.model_info(repo.hf_repo, revision=revision, files_metadata=True)
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size or 0) for s in info.siblings or []}
    unmatched = [p for p in repo.allow_patterns if not any(filter_repo_objects(sizes, allow_patterns=p))]
    if unmatched:
        raise InputError(f"{repo.hf_repo} (revision {revision or constants.DEFAULT_REVISION}) has no file matching "
                         f"{', '.join(unmatched)}: check --revision, or the release changed and more4d's "
                         "RELEASED_REPOS needs an update")
    return {path: sizes[path] for path in filter_repo_objects(sizes, allow_patterns=list(repo.allow_patterns))}


def _check_target(dir: str | os.PathLike | None) -> Path | None:
    """`dir` as a Path after checking it is (or can become) a writable folder; no network involved."""
    if dir is None:
        return None
    root = Path(dir).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise InputError(f"--dir {str(dir)!r} exists and is not a folder")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"--dir {str(dir)!r} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--dir {str(dir)!r} is not writable ({existing} is read-only for this user)")
    return root


def _modelscope_snapshot_download() -> Callable[..., str]:
    try:
        from modelscope import snapshot_download as modelscope_snapshot_download
    except ImportError:
        raise InputError("--source modelscope needs the modelscope package: `pip install modelscope`, "
                         "or use --source hf") from None
    return modelscope_snapshot_download


def _unreachable(exc: BaseException) -> str:
    if isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing can be downloaded"
    return f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(exc).__name__}: {_one_line(exc)})"


def _copy_instructions(reason: str, repos: Iterable[HubRepo], source: Source) -> str:
    """One line: why, every repo and pattern needed, and how to fetch them elsewhere and point more4d at them."""
    repos = list(repos)
    needed = "; ".join(f"{repo.hf_repo} -> {repo.name}/ ({', '.join(repo.allow_patterns)})" for repo in repos)
    command = "more4d weights download --dir DIR"
    if source != "hf":
        command += f" --source {source}"
    if len(repos) < len(RELEASED_REPOS):
        command += " --only " + " ".join(repo.name for repo in repos)
    return (f"{reason}. Needed: {needed}. On a machine with network run `{command}`, copy DIR here and pass "
            "`--weights DIR` to more4d")


def _one_line(exc: BaseException) -> str:
    """`exc`'s message on one line (huggingface_hub's span several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
