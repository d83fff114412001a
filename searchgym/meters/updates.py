"""Where training wrote: the share of a model's parameters a run moved, and how much two runs' moved sets overlap.

Mukherjee et al. (2025, "Reinforcement learning finetunes small subnetworks in large language models") report
that RL fine-tuning leaves most parameters unchanged (updates 5-30 % of them), that the moved subnetwork is
largely the same across seeds, and that SFT updates densely. These meters measure both on saved weights, as
pure functions over ``{name: tensor}`` tables (the base's and a trained model's, same names and shapes):

- a parameter *moved* when ``|trained − base| > tolerance`` after both are rounded to ``precision``
  (``"float32"``: the saved values; ``"bfloat16"``: the paper's setting, where an update smaller than half a
  bf16 step of the weight does not count);
- ``updates/moved_share``: moved parameters / all parameters; ``updates/sparsity`` = 1 − that;
- ``updates/overlap``: for runs A and B, |A ∩ B| / |A| (the paper's one-sided overlap), beside
  ``updates/overlap_chance`` = |B| / N, what a random set of B's size would give, and ``updates/jaccard``.

A LoRA run's merged update B·A is dense in every matrix it adapts by construction, so these meters say
something about *where RL writes* only for full-parameter runs (``model.finetune = "full"``,
docs/where-rl-writes.md). ``searchgym updates RUN …`` loads the weights and prints them.
"""

from __future__ import annotations

from collections.abc import Mapping

PRECISIONS = ("float32", "bfloat16")
# Parameter kinds by name, first match wins (Llama/Qwen/SmolLM2 naming; anything else is "other").
KINDS = (("embedding", ("embed_tokens", "lm_head", "wte", "wpe")), ("norm", ("norm", "ln_")),
         ("attention", ("self_attn", "attn", "q_proj", "k_proj", "v_proj", "o_proj")),
         ("mlp", ("mlp", "gate_proj", "up_proj", "down_proj")))


def moved_masks(base: Mapping, trained: Mapping, *, tolerance: float = 1e-5, precision: str = "float32") -> dict:
    """``{name: bool tensor}``: which entries of each parameter moved by more than ``tolerance``.

    >>> import torch
    >>> base = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    >>> trained = {"w": torch.tensor([1.0, 2.0 + 1e-6, 3.005, 3.0])}
    >>> moved_masks(base, trained)["w"].tolist()
    [False, False, True, True]
    >>> moved_masks(base, trained, precision="bfloat16")["w"].tolist()  # 3.005 rounds to 3.0 in bf16
    [False, False, False, True]
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if set(base) != set(trained):
        missing, extra = sorted(set(base) - set(trained)), sorted(set(trained) - set(base))
        raise ValueError(f"the models' parameters differ: missing {missing[:3]}, extra {extra[:3]}")
    dtype = getattr(torch, precision)
    masks = {}
    for name, b in base.items():
        t = trained[name]
        if t.shape != b.shape:
            raise ValueError(f"parameter {name}: shape {tuple(t.shape)} vs the base's {tuple(b.shape)}")
        delta = t.detach().to(dtype).float().cpu() - b.detach().to(dtype).float().cpu()
        masks[name] = delta.abs() > tolerance
    return masks


def moved_share(masks: Mapping) -> float:
    """The share of all entries that moved.

    >>> import torch
    >>> moved_share({"a": torch.tensor([True, False]), "b": torch.tensor([[False, False], [True, True]])})
    0.5
    """
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total if total else float("nan")


def kind_of(name: str) -> str:
    """The kind of a parameter by its name (`KINDS`).

    >>> kind_of("model.layers.0.self_attn.q_proj.weight"), kind_of("model.embed_tokens.weight"), kind_of("x")
    ('attention', 'embedding', 'other')
    """
    for kind, needles in KINDS:
        if any(n in name for n in needles):
            return kind
    return "other"


def moved_share_by_kind(masks: Mapping) -> dict[str, float]:
    """``{kind: moved share}`` over the parameters of each kind present.

    >>> import torch
    >>> moved_share_by_kind({"layers.0.mlp.up_proj.weight": torch.tensor([True, True]),
    ...                      "norm.weight": torch.tensor([False, True])})
    {'mlp': 1.0, 'norm': 0.5}
    """
    groups: dict[str, list] = {}
    for name, mask in masks.items():
        groups.setdefault(kind_of(name), []).append(mask)
    return {kind: moved_share(dict(enumerate(group))) for kind, group in sorted(groups.items())}


def overlap(a: Mapping, b: Mapping) -> dict[str, float]:
    """How much run A's moved set is also B's: ``updates/overlap`` |A ∩ B| / |A|, ``updates/overlap_chance``
    |B| / N (a random set of B's size), ``updates/jaccard`` |A ∩ B| / |A ∪ B|. NaN where a set is empty.

    >>> import torch
    >>> a = {"w": torch.tensor([True, True, False, False])}
    >>> b = {"w": torch.tensor([True, False, False, False])}
    >>> overlap(a, b)
    {'updates/overlap': 0.5, 'updates/overlap_chance': 0.25, 'updates/jaccard': 0.5}
    """
    if set(a) != set(b):
        raise ValueError("the two runs' parameters differ: compare runs of the same base model")
    both = sum(int((a[k] & b[k]).sum()) for k in a)
    either = sum(int((a[k] | b[k]).sum()) for k in a)
    size_a, size_b = sum(int(m.sum()) for m in a.values()), sum(int(m.sum()) for m in b.values())
    total = sum(m.numel() for m in a.values())
    nan = float("nan")
    return {"updates/overlap": both / size_a if size_a else nan,
            "updates/overlap_chance": size_b / total if total else nan,
            "updates/jaccard": both / either if either else nan}


def update_meters(base: Mapping, trained: Mapping, *, tolerance: float = 1e-5, precision: str = "float32") -> dict:
    """``updates/moved_share``, ``updates/sparsity``, ``updates/parameters`` and one
    ``updates/moved_share_<kind>`` per parameter kind, for one trained model against its base.

    >>> import torch
    >>> base = {"mlp.w": torch.zeros(4), "norm.w": torch.ones(2)}
    >>> meters = update_meters(base, {"mlp.w": torch.tensor([0.0, 0.0, 0.0, 0.1]), "norm.w": torch.ones(2)})
    >>> meters["updates/moved_share"], meters["updates/sparsity"], meters["updates/moved_share_mlp"]
    (0.16666666666666666, 0.8333333333333334, 0.25)
    """
    masks = moved_masks(base, trained, tolerance=tolerance, precision=precision)
    share = moved_share(masks)
    return {"updates/moved_share": share, "updates/sparsity": 1.0 - share,
            "updates/parameters": float(sum(m.numel() for m in masks.values())),
            **{f"updates/moved_share_{kind}": v for kind, v in moved_share_by_kind(masks).items()}}
