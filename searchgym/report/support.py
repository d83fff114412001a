"""Support meters: how likely an arm's trajectories are under the base model (Yue et al. 2025).

If RL only sharpens what the base already does, the trajectories it samples stay inside the base's support:
the base finds them about as likely, per token, as its own samples. A trained arm whose trajectories the base
finds much less likely has moved somewhere the base would rarely go. ``support/base_nll`` is the mean per-token
negative log-likelihood of the arm's *own* words (the assistant turns; the question, system prompt and tool
results are context) under the base model, ``support/own_nll`` the same under the model that sampled them.

The conversation is scored as the rollout showed it to the model: the chat template of the model's tokenizer
with the env's tool schemas (`chat_texts`), and the assistant turns found by the very mask the prior lab
trains with (`agent_labels`, ``pretrain.loss_on = "agent"``), so "agent tokens" means the same everywhere.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from searchgym.train.pretrain import agent_labels, chat_texts, model_dir
from searchgym.trajectory import Trajectory

IGNORE = -100  # agent_labels' label for a context token


def agent_token_labels(tokenizer, trajectories: Sequence[Trajectory]) -> list[tuple[list[int], list[int]]]:
    """``(input ids, labels)`` per trajectory: the conversation rendered as the rollout rendered it, each
    token labelled with its id when it starts inside an assistant turn and `IGNORE` otherwise.

    Tokenised without added special tokens, as the rollout tokenises its prompts.
    """
    texts = chat_texts(trajectories, tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [(list(ids), agent_labels(text, ids, offsets))
            for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"], strict=True)]


def assistant_nll(model, tokenizer, trajectories: Sequence[Trajectory], *, batch_size: int = 4) -> dict[str, float]:
    """Mean negative log-likelihood per assistant token of ``trajectories`` under ``model``::

        nll = −(1/T) Σ_i Σ_{t ∈ A_i} log p_model(y_{i,t} | y_{i,<t}),   ppl = exp(nll),   T = Σ_i |A_i|

    where A_i are the tokens of trajectory i inside its assistant turns (`agent_token_labels`). The mean is
    pooled over tokens, so a long trajectory weighs in by its length, as in a perplexity. Returns
    ``{"nll", "ppl", "tokens"}``; a conversation longer than the model's context is cut there (the rollout
    never lets one outgrow it). Scores in eval mode under inference mode and restores the training mode.

    >>> from types import SimpleNamespace
    >>> from searchgym.train.prior_tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["x"], 300)
    >>> class Uniform(torch.nn.Module):  # equal logits everywhere: every token costs ln(vocabulary)
    ...     config = SimpleNamespace(max_position_embeddings=4096)
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = torch.nn.Parameter(torch.zeros(1))
    ...     def forward(self, input_ids, attention_mask):
    ...         return SimpleNamespace(logits=torch.zeros(*input_ids.shape, len(tok)))
    >>> t = Trajectory("q", "e", 0, "Who?", [{"role": "user", "content": "Who?"},
    ...                {"role": "assistant", "content": "Ada"}], [], "A", None, [], [], [], "Ada", 1.0, True, [], [], 1)
    >>> r = assistant_nll(Uniform(), tok, [t])
    >>> r["tokens"], round(r["nll"], 6) == round(math.log(len(tok)), 6)  # "A", "d", "a", "<|im_end|>"
    (4.0, True)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    rows = [(ids[:context], labels[:context]) for ids, labels in agent_token_labels(tokenizer, trajectories)]
    rows.sort(key=lambda r: len(r[0]))  # similar lengths share a batch: less padding to compute on
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            # Right padding: positions start at 0 as in training, and the pads come after every scored token.
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch], device=device)
            labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in batch], device=device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits
            # The logits at t predict token t + 1; a sum in float32, whatever dtype the model runs in.
            targets = labels[:, 1:]
            total += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                     ignore_index=IGNORE, reduction="sum").item()
            count += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no assistant tokens to score: the trajectories hold no assistant turns, or the "
                         "tokenizer's chat template does not write ChatML (<|im_start|>assistant ... <|im_end|>)")
    nll = total / count
    return {"nll": nll, "ppl": math.exp(nll), "tokens": float(count)}


def _batches(tokenizer, trajectories: Sequence[Trajectory], context: int, batch_size: int):
    """(indices, ids, labels, mask) batches of the trajectories' token ids, similar lengths together, right
    padded (positions start at 0 as in training; the pads come after every scored token)."""
    rows = [(i, ids[:context], labels[:context])
            for i, (ids, labels) in enumerate(agent_token_labels(tokenizer, trajectories))]
    rows.sort(key=lambda r: len(r[1]))  # similar lengths share a batch: less padding to compute on
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        width = max(len(ids) for _, ids, _ in batch)
        yield ([i for i, _, _ in batch], torch.tensor([ids + [pad] * (width - len(ids)) for _, ids, _ in batch]),
               torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, _, lab in batch]),
               torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for _, ids, _ in batch]))


def kl_to_base(model, tokenizer, trajectories: Sequence[Trajectory], *, temperature: float = 1.0,
               batch_size: int = 4, base=None) -> list[dict[str, float]]:
    """How far a policy has moved from its base on its own trajectories: per trajectory, sums over its
    assistant tokens (`agent_token_labels`) of three estimates of KL(π || π_base), with π the ``model``
    (adapter on) and π_base the same model with the adapter off — or ``base``, a separate model with the same
    tokenizer (after full-parameter training) — both at the sampling ``temperature``::

        k1 = log π(y_t) − log π_base(y_t)                 (Schulman's k1: unbiased, can be < 0)
        k3 = r − 1 − log r,  r = π_base(y_t) / π(y_t)     (k3: unbiased, >= 0, low variance)
        exact = Σ_v π(v) (log π(v) − log π_base(v))       (the whole next-token distribution at t)

    each at a position t of a token y_t the policy sampled. Divided by ``tokens`` they are per-token KL
    estimates; all three have the same expectation, which the tests check. Returns ``[{"k1", "k3", "exact",
    "tokens"}]`` in the order given. Scores in eval mode under inference mode, the adapter switched back on.

    >>> from types import SimpleNamespace
    >>> from searchgym.train.prior_tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["x"], 300)
    >>> class Shifted(torch.nn.Module):  # the "adapter" raises one logit by 1: a known KL at every position
    ...     config = SimpleNamespace(max_position_embeddings=4096)
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w, self.on = torch.nn.Parameter(torch.zeros(1)), True
    ...     def forward(self, input_ids, attention_mask):
    ...         z = torch.zeros(*input_ids.shape, len(tok)); z[..., 5] += 1.0 if self.on else 0.0
    ...         return SimpleNamespace(logits=z)
    ...     def disable_adapter(self):
    ...         import contextlib
    ...         @contextlib.contextmanager
    ...         def off():
    ...             self.on = False
    ...             yield
    ...             self.on = True
    ...         return off()
    >>> t = Trajectory("q", "e", 0, "Who?", [{"role": "user", "content": "Who?"},
    ...                {"role": "assistant", "content": "Ada"}], [], "A", None, [], [], [], "Ada", 1.0, True, [], [], 1)
    >>> r = kl_to_base(Shifted(), tok, [t])[0]
    >>> V, e = len(tok), math.e
    >>> p5 = e / (e + V - 1)  # the policy's probability of token 5; every other token has (1 - p5) / (V - 1)
    >>> exact = p5 * math.log(p5 * V) + (1 - p5) * math.log((1 - p5) / (V - 1) * V)
    >>> r["tokens"], abs(r["exact"] / r["tokens"] - exact) < 1e-6, r["k3"] > 0
    (4.0, True, True)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    scale = 1.0 / temperature if temperature > 0 else 1.0  # greedy decoding: the T = 1 distributions
    context = getattr(model.config, "max_position_embeddings", None) or 1 << 30
    device = next(model.parameters()).device
    out = [{"k1": 0.0, "k3": 0.0, "exact": 0.0, "tokens": 0.0} for _ in trajectories]
    was_training = model.training
    model.eval()
    try:
        for index, ids, labels, mask in _batches(tokenizer, trajectories, context, batch_size):
            ids, mask = ids.to(device), mask.to(device)
            with torch.inference_mode():
                policy = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                if base is not None:
                    reference = base(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                else:
                    with model.disable_adapter():
                        reference = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            # The logits at t predict token t + 1: score every agent token under both models.
            targets = labels[:, 1:].to(device)
            keep = targets != IGNORE
            lp, lq = F.log_softmax(policy * scale, -1), F.log_softmax(reference * scale, -1)
            tok = targets.clamp(min=0).unsqueeze(-1)
            log_ratio = (lq.gather(-1, tok) - lp.gather(-1, tok)).squeeze(-1)  # log π_base − log π
            terms = {"k1": -log_ratio, "k3": torch.expm1(log_ratio) - log_ratio,
                     "exact": (lp.exp() * (lp - lq)).sum(-1)}
            for row, i in enumerate(index):
                for name, values in terms.items():
                    out[i][name] += float(values[row][keep[row]].sum())
                out[i]["tokens"] += float(keep[row].sum())
    finally:
        model.train(was_training)
    return out


def support_meters(trajectories: Sequence[Trajectory], base, own=None, *, batch_size: int = 4) -> dict[str, float]:
    """``support/base_nll``, ``support/base_ppl`` (the trajectories under ``base``), ``support/own_nll``,
    ``support/own_ppl`` (under ``own``, the model that sampled them; NaN without it) and ``support/tokens``.
    ``base`` and ``own`` are ``(model, tokenizer)`` pairs; pass the same pair to score a base's own samples.
    """
    b = assistant_nll(*base, trajectories, batch_size=batch_size)
    o = (b if own is base else assistant_nll(*own, trajectories, batch_size=batch_size)) if own is not None \
        else {"nll": math.nan, "ppl": math.nan}
    return {"support/base_nll": b["nll"], "support/base_ppl": b["ppl"], "support/own_nll": o["nll"],
            "support/own_ppl": o["ppl"], "support/tokens": b["tokens"]}


def run_models(path: str | Path) -> tuple[str, str]:
    """``(base, own)``: the base model an input's run names and the model that sampled it, as `load_model`
    takes them. ``path`` is a run folder or its ``trajectories.jsonl``:

    - a trained run (``adapter/``): the base its adapter was trained on, and the run folder itself;
    - a run's ``baseline/`` evaluation: the parent run's base, twice;
    - a full-parameter run (``model/``): its base (the prior-lab model it pretrained, else its recipe's
      ``model.base``), and the run folder itself;
    - a prior-lab run without adapter (``stages/pretrain/model``): that model, twice (it is its own base);
    - an untrained run (a study's base arm: ``recipe.toml`` only): its ``model.base``, twice.

    >>> run_models("/no/such/run.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: /no/such/run.jsonl is not in a run folder: no adapter, pretrained model or recipe.toml names its model
    """
    # The same resolution load_model applies to a run folder (its adapter, and the base the adapter records).
    from searchgym.agent.models import adapter_base, run_adapter, run_full_model

    path = Path(path)
    folder = path.parent if path.suffix == ".jsonl" else path
    if folder.name == "baseline" and (folder.parent / "recipe.toml").is_file():
        base, _ = run_models(folder.parent)
        return base, base
    adapter = run_adapter(folder) if folder.is_dir() else None
    if adapter is not None:
        return adapter_base(adapter), str(folder)
    prior = str(model_dir(folder).resolve()) if (model_dir(folder) / "config.json").is_file() else None
    recipe = folder / "recipe.toml"
    base = prior or (tomllib.loads(recipe.read_text(encoding="utf-8")).get("model", {}).get("base")
                     if recipe.is_file() else None)
    if base and folder.is_dir() and run_full_model(folder) is not None:
        return base, str(folder)
    if base:
        return base, base
    raise ValueError(f"{path} is not in a run folder: no adapter, pretrained model or recipe.toml names its model")
