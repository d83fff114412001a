"""The prior lab: pretrain a small causal LM from scratch on a controlled mixture of search strategies.

With an off-the-shelf model the prior is whatever its pretraining was; here it is a dial. We sample
demonstrator trajectories in the synthetic world with a chosen strategy mixture (``pretrain.mixture``),
train a byte-level BPE tokenizer and a few-million-parameter Llama on them (plus the world's documents),
and save it as an ordinary base model, so SFT and GRPO put their LoRA on top and the meters can ask what
RL amplifies, what it loses and whether it ever finds a strategy the prior never showed.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from searchgym.config.agent_recipe import PretrainConfig, Recipe
from searchgym.runs import RunFolder, save_pretrained_atomic
from searchgym.train.prior_tokenizer import (  # noqa: F401  (re-exported: the stage's tokenizer)
    BOS,
    EOS,
    PAD,
    call_blocks,
    scaffold_blocks,
    scramble_names,
    train_tokenizer,
)
from searchgym.trajectory import Trajectory, read_trajectories, write_trajectories
from searchgym.util.config_schema import ConfigError

STAGE = "pretrain"


# ---- 1. the strategy mixture ----------------------------------------------------------------------

def mixture_weights(mixture: dict, strategies: Sequence[str]) -> dict[str, float]:
    """Validated weights for every strategy of the world (strategies not named get 0): the check a recipe
    already passed at load (`searchgym.train.pretrain_checks.check_mixture`), here for a world built per instance.

    >>> mixture_weights({"forward": 0.5, "verify": 0.5}, ["forward", "snippet", "verify"])
    {'forward': 0.5, 'snippet': 0.0, 'verify': 0.5}
    >>> mixture_weights({"jump": 1.0}, ["forward"])
    Traceback (most recent call last):
    ...
    searchgym.util.config_schema.ConfigError: pretrain.mixture: 'jump' is not a strategy of this world; use some of ['forward']
    """
    from searchgym.train.pretrain_checks import check_mixture

    return check_mixture(mixture, strategies)


def task_distribution(weights: dict[str, float], valid: Sequence[str]) -> dict[str, float]:
    """The mixture restricted to a task's valid strategies and renormalised ({} when none is left).

    >>> task_distribution({"forward": 0.5, "parallel": 0.2, "snippet": 0.0}, ["forward", "snippet"])
    {'forward': 1.0}
    >>> task_distribution({"forward": 0.75, "verify": 0.25, "parallel": 1.0}, ["forward", "verify"])
    {'forward': 0.75, 'verify': 0.25}
    """
    allowed = {s: weights.get(s, 0.0) for s in valid if weights.get(s, 0.0) > 0}
    total = sum(allowed.values())
    return {s: w / total for s, w in allowed.items()} if total else {}


def expected_mix(weights: dict[str, float], tasks) -> dict[str, float]:
    """The strategy shares to expect when tasks are drawn uniformly and each demo's strategy from
    `task_distribution` (a strategy valid on few tasks ends up below its weight).

    >>> from types import SimpleNamespace as T
    >>> expected_mix({"forward": 0.5, "parallel": 0.5}, [T(strategies=("forward",)), T(strategies=("forward", "parallel"))])
    {'forward': 0.75, 'parallel': 0.25}
    """
    total: Counter = Counter()
    usable = 0
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        usable += bool(dist)
        total.update(dist)
    return {s: total[s] / usable for s in sorted(total)} if usable else {}


def realised_mix(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Share of demos per demonstrated strategy, sorted by name.

    >>> t = lambda s: Trajectory("q", "e", 0, "?", [], [], "A", s, [], [], [], "x", 1.0, True, [], [], 1)
    >>> realised_mix([t("forward"), t("forward"), t("verify"), t("forward")])
    {'forward': 0.75, 'verify': 0.25}
    """
    counts = Counter(t.meta.get("demo_strategy") or t.strategy for t in trajectories)
    n = max(len(trajectories), 1)
    return {k: counts[k] / n for k in sorted(counts)}


# ---- 2. the pretraining corpus --------------------------------------------------------------------

def _pretrain_env(recipe: Recipe, world: int = 0):
    """The env's train split; ``world`` > 0: the same kind of world drawn with world seed + ``world``
    (other names, other facts), one of the ``pretrain.extra_worlds``."""
    import gymnasium

    import searchgym  # noqa: F401  (registers the env ids)

    kwargs = {**recipe.env.kwargs, "split": "train"}
    if world:
        world_kwargs = dict(kwargs.get("world_kwargs") or {})
        kwargs["world_kwargs"] = {**world_kwargs, "seed": world_kwargs.get("seed", 0) + world}
    return gymnasium.make(recipe.env.id, disable_env_checker=True, **kwargs)


def _worlds(recipe: Recipe) -> range:
    """The env's own world (0) and the ``pretrain.extra_worlds`` beside it."""
    return range(1 + recipe.pretrain.extra_worlds)


def sample_demos(recipe: Recipe, *, progress: bool = True) -> list[Trajectory]:
    """``pretrain.num_demos`` correct demonstrator episodes on train tasks of at most ``pretrain.max_hops``
    hops: a task drawn at random, its strategy by `task_distribution`, the query style uniformly; as many
    again from each of the ``pretrain.extra_worlds``."""
    return [t for world in _worlds(recipe) for t in _sample_world_demos(recipe, world, progress)]


def _sample_world_demos(recipe: Recipe, world_index: int, progress: bool) -> list[Trajectory]:
    from tqdm.auto import tqdm

    from searchgym.envs.scripted_play import honest_demo

    p = recipe.pretrain
    env = _pretrain_env(recipe, world_index)
    world = env.unwrapped.taskset
    if not getattr(world, "strategies", None):
        raise ConfigError(f"env.id: {recipe.env.id} has no scripted strategies to pretrain on; use "
                          "searchgym/SyntheticWorld-v0 or searchgym/SyntheticWorld-Easy-v0")
    weights = mixture_weights(p.mixture, world.strategies)
    tasks = [t for t in env.unwrapped.tasks if t.difficulty <= p.max_hops and task_distribution(weights, t.strategies)]
    if not tasks:
        raise ConfigError(f"pretrain: no train task of {recipe.env.id} has <= {p.max_hops} hops and a strategy "
                          "with weight > 0; raise pretrain.max_hops or change pretrain.mixture")
    rng = random.Random(f"pretrain:{recipe.seed}" + (f":{world_index}" if world_index else ""))
    demos: list[Trajectory] = []
    attempts = 0
    desc = "pretrain demos" + (f" (world +{world_index})" if world_index else "")
    with tqdm(total=p.num_demos, desc=desc, disable=not progress) as bar:
        while len(demos) < p.num_demos and attempts < 5 * p.num_demos:  # a few demos fail; never loop forever
            attempts += 1
            task = rng.choice(tasks)
            dist = task_distribution(weights, task.strategies)
            strategy = rng.choices(list(dist), weights=list(dist.values()))[0]
            style = rng.choice(world.query_styles)
            t = honest_demo(env, strategy, style, task_id=task.id, sample=len(demos))
            if t is not None:
                demos.append(t)
                bar.update()
    env.close()
    if len(demos) < p.num_demos:
        raise RuntimeError(f"only {len(demos)} of {p.num_demos} pretraining demos succeeded in {attempts} tries; "
                           "lower pretrain.num_demos or check env.kwargs (top_k, max_obs_chars, max_steps)")
    return demos


def _lexicon(recipe: Recipe) -> list[str]:
    """The world's atomic strings when ``pretrain.name_tokens`` asks for them (else none)."""
    if not recipe.pretrain.name_tokens:
        return []
    words: dict[str, None] = {}
    for index in _worlds(recipe):
        env = _pretrain_env(recipe, index)
        world = env.unwrapped.taskset
        env.close()
        if not callable(getattr(world, "lexicon", None)):
            raise ConfigError(f"pretrain.name_tokens: the world of {recipe.env.id} lists no lexicon (names, doc "
                              "ids) to keep whole; set pretrain.name_tokens = false")
        words.update(dict.fromkeys(world.lexicon()))
    return list(words)


def _lexicon_of(recipe: Recipe) -> list[str]:
    """The worlds' lexicon whatever ``pretrain.name_tokens`` says (scrambling needs it either way)."""
    return _lexicon(dataclasses.replace(recipe, pretrain=dataclasses.replace(recipe.pretrain, name_tokens=True)))


def corpus_texts(recipe: Recipe) -> list[str]:
    """The worlds' documents as plain text, so the prior also knows the world it will search."""
    docs = []
    for index in _worlds(recipe):
        env = _pretrain_env(recipe, index)
        docs += [f"{d.title}\n{d.text}" for d in env.unwrapped.taskset.corpus]
        env.close()
    return docs


def chat_texts(demos: Sequence[Trajectory], tokenizer) -> list[str]:
    """Each demo rendered exactly as an LLM sees it: the chat template with the env's tool schemas."""
    from searchgym.envs.tools import SearchTools

    tools = SearchTools.schemas()
    return [tokenizer.apply_chat_template(t.messages, tools=tools, tokenize=False) for t in demos]


# ---- 3. tokenizer and model -----------------------------------------------------------------------

def agent_labels(text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Labels for ``loss_on = "agent"``: a token counts (label = its id) when it starts inside an assistant
    turn of the rendered chat ``text`` (after ``<|im_start|>assistant\\n``, up to and including its
    ``<|im_end|>``); every other token is context (-100).

    >>> text = "<|im_start|>user\\nQ?<|im_end|>\\n<|im_start|>assistant\\nA<|im_end|>\\n"
    >>> offsets = [(0, 12), (12, 17), (17, 19), (19, 29), (29, 30), (30, 42), (42, 52), (52, 53), (53, 63), (63, 64)]
    >>> agent_labels(text, list(range(10)), offsets)
    [-100, -100, -100, -100, -100, -100, -100, 7, 8, -100]
    """
    head = f"{BOS}assistant\n"
    spans, start = [], text.find(head)
    while start >= 0:
        begin = start + len(head)
        end = text.find(EOS, begin)
        end = len(text) if end < 0 else end + len(EOS)
        spans.append((begin, end))
        start = text.find(head, end)
    return [i if any(a <= s < b for a, b in spans) else -100 for i, (s, _) in zip(ids, offsets, strict=True)]


def build_model(p: PretrainConfig, tokenizer, seed: int):
    """A randomly initialised Llama sized by ``recipe.pretrain`` (seeded, without touching global RNG)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchgym.agent.models import stop_token_ids

    if p.hidden_size % p.num_heads:
        raise ConfigError(f"pretrain.hidden_size ({p.hidden_size}) must be a multiple of pretrain.num_heads "
                          f"({p.num_heads})")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden_size, num_hidden_layers=p.num_layers,
                         num_attention_heads=p.num_heads, num_key_value_heads=p.num_heads,
                         intermediate_size=p.intermediate_size or 4 * p.hidden_size,
                         # GRPO prompts + completions run past the training length; RoPE has no hard limit.
                         max_position_embeddings=max(4096, p.max_length), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    return model


# ---- 4. the stage ---------------------------------------------------------------------------------

def _training_args(recipe: Recipe, output_dir: Path):
    from transformers import TrainingArguments

    from searchgym.train.context import trainer_args

    p = recipe.pretrain
    return TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=p.epochs, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size, lr_scheduler_type="cosine", warmup_steps=p.warmup_steps,
        weight_decay=0.01, logging_steps=p.logging_steps, save_strategy="steps", save_steps=p.save_steps,
        # Every checkpoint is kept (a few MB each): `benchmarks/prior.py --curve` samples them for the
        # learning curve. (Live probes would sample a random model at step 0, whose babble fills the
        # context: minutes per probe for nothing.)
        save_total_limit=None, **trainer_args(recipe),  # device, precision, report_to, seed
        disable_tqdm=False,
        dataloader_num_workers=0, remove_unused_columns=True,
        # Demos run 200-850 tokens: batching similar lengths cuts the padding the model computes on.
        train_sampling_strategy="group_by_length",
    )


def model_dir(run_dir: str | Path) -> Path:
    """Where the pretrained base model lives (`searchgym.runs.RunFolder.stage_model`): ``load_model(model_dir(run))``.

    >>> model_dir("runs/x").as_posix()
    'runs/x/stages/pretrain/model'
    """
    return RunFolder(run_dir).stage_model(STAGE)


def run_pretrain(recipe: Recipe, run_dir: str | Path, *, resume: bool = False, progress: bool = True, ctx=None):
    """Pretrain the prior ``recipe.pretrain`` describes; return ``(model, tokenizer)`` loaded from its folder.

    Writes under ``run_dir/stages/pretrain/``: ``demos.jsonl`` (the pretraining trajectories),
    ``tokenizer/``, ``prior_mix.json`` (configured, expected and realised strategy shares) and ``model/``
    (model + tokenizer, loadable by `searchgym.agent.models.load_model`). Checkpoints go to
    ``run_dir/checkpoints/pretrain``; ``resume`` reuses the demos and tokenizer and continues from the
    latest checkpoint. Trainer logs append to ``run_dir/metrics.jsonl`` (stage "pretrain"). With a
    distributed ``ctx`` rank 0 writes the demos, tokenizer and model; the other ranks wait and read them.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer

    from searchgym.agent.models import load_model
    from searchgym.runs import MetricsLogger
    from searchgym.train.context import barrier, latest_checkpoint, main_first, rank

    run_dir, p = Path(run_dir), recipe.pretrain
    main = rank() == 0
    run = RunFolder(run_dir)
    stage_dir = run.stage_dir(STAGE)
    stage_dir.mkdir(parents=True, exist_ok=True)
    reuse = resume or not main
    # Rank 0 samples the demos and trains the tokenizer first; the other ranks then read them (and stop with
    # a clear error, not a hang, if rank 0 fails here).
    with main_first("sampling the prior's demos and training its tokenizer"):
        # 1. Demonstrations with the chosen mixture (reused on resume: the same data the checkpoint saw).
        demos_path = stage_dir / "demos.jsonl"
        if reuse and demos_path.exists():
            demos = list(read_trajectories(demos_path))
        else:
            demos = sample_demos(recipe, progress=progress)
            write_trajectories(demos_path, demos)
        env = _pretrain_env(recipe)
        world = env.unwrapped.taskset
        weights = mixture_weights(p.mixture, world.strategies)
        eligible = [t for t in env.unwrapped.tasks if t.difficulty <= p.max_hops]
        env.close()
        mix = {"configured": {s: w / sum(weights.values()) for s, w in weights.items()},
               "expected": expected_mix(weights, eligible), "realised": realised_mix(demos),
               "demos": len(demos), "max_hops": p.max_hops, "seed": recipe.seed, "extra_worlds": p.extra_worlds}
        if main:
            run.write_json(f"stages/{STAGE}/prior_mix.json", mix)
            run.append_metrics({"stage": STAGE, "step": 0, **{f"prior/share_{s}": v for s, v in mix["realised"].items()}})
        if progress and main:
            print("prior mix (realised): " + ", ".join(f"{s} {v:.0%}" for s, v in mix["realised"].items()))

        # 2. Tokenizer trained on what the model will read: rendered conversations and the documents.
        docs = corpus_texts(recipe) if p.documents else []
        tok_dir = stage_dir / "tokenizer"
        if reuse and (tok_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
            tokenizer.padding_side = "left"  # not saved with it; live probes generate with this tokenizer
        else:
            # The template needs a tokenizer object, not its vocabulary: render with a throwaway byte-level one.
            texts = chat_texts(demos, train_tokenizer(["x"], 300)) + docs
            tokenizer = train_tokenizer(texts, p.vocab_size, blocks=scaffold_blocks() + (call_blocks() if p.call_tokens else []),
                                        words=_lexicon(recipe))
            tokenizer.save_pretrained(str(tok_dir))
    texts = chat_texts(demos, tokenizer)
    if p.scramble_names:
        lexicon, rng = _lexicon(recipe) or _lexicon_of(recipe), random.Random(f"scramble:{recipe.seed}")
        texts = [scramble_names(t, lexicon, rng) for t in texts]
    texts += docs

    # 3. A small Llama from scratch, trained on the whole text (a prior, not an instruction tune).
    model = build_model(p, tokenizer, recipe.seed)
    n_params = sum(x.numel() for x in model.parameters())
    if progress and main:
        print(f"pretraining a {n_params / 1e6:.2f}M-parameter model on {len(demos)} demos + {len(docs)} documents")
    encoded = tokenizer(texts, truncation=True, max_length=p.max_length,
                        return_offsets_mapping=p.loss_on == "agent")  # offsets: only to place the agent's turns
    labels = [list(ids) for ids in encoded["input_ids"]]
    if p.loss_on == "agent":  # conversations come first in texts, documents (labelled whole) after
        n = len(demos)
        labels[:n] = [agent_labels(t, ids, offsets) for t, ids, offsets in
                      zip(texts[:n], encoded["input_ids"][:n], encoded["offset_mapping"][:n], strict=True)]
    dataset = Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                                 "labels": labels})
    collate_tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    collate_tokenizer.padding_side = "right"  # causal training: positions must start at 0
    output_dir = run.checkpoints(STAGE)
    trainer = Trainer(model=model, args=_training_args(recipe, output_dir), train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(collate_tokenizer, label_pad_token_id=-100),
                      callbacks=[MetricsLogger(run_dir, STAGE)])
    checkpoint = latest_checkpoint(output_dir) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # 4. Save as an ordinary base model and hand back the reloaded copy: its name_or_path is the folder,
    # which PEFT records as the base of every adapter trained on top.
    target = model_dir(run_dir)
    if main:
        run.append_metrics({"stage": STAGE, "step": trainer.state.global_step, "prior/params": n_params,
                            "prior/tokens": sum(len(x) for x in encoded["input_ids"])})
        save_pretrained_atomic(trainer.model, tokenizer, target)
    barrier()
    device = ctx.device if ctx is not None else "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(str(target.resolve()), dtype=getattr(torch, recipe.model.dtype), device=device)


def train_pretrain(ctx):
    """The "pretrain" stage: a prior from scratch; sets ``ctx.tokenizer`` and returns the model."""
    ctx.resume_checkpoint()  # on --resume: drop the metrics rows logged after the latest checkpoint
    model, ctx.tokenizer = run_pretrain(ctx.recipe, ctx.run_dir, resume=ctx.resume, progress=ctx.progress, ctx=ctx)
    return model
