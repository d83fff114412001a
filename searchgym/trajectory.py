"""One sampled episode, as written to ``trajectories.jsonl`` and read by every meter.

Rollouts (LLM agents), demonstrators and the GRPO adapter all produce this record, so meters never
care where a trajectory came from. Token-level fields are empty for scripted demonstrations.
"""

from __future__ import annotations

import functools
import json
import os
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from searchgym.util.files import atomic_write

# Role of each generated token, for role-split entropy (meters.md): tokens inside a search query,
# tokens of the final answer, the first tokens generated after a tool result, everything else.
TOKEN_ROLES = ("query", "answer", "post_tool", "other")


@dataclass
class Trajectory:
    """A single episode of one agent on one task.

    ``signature`` is the action-type string (``"S S O A"``: Search, Open, Answer, ``X`` invalid),
    ``strategy`` the world's deterministic strategy label (``None`` where it has none).
    """

    task_id: str
    env_id: str
    sample: int  # index of this sample among the n drawn for the task
    question: str
    messages: list[dict]  # chat messages exactly as the model saw/produced them
    calls: list[dict]  # [{"name", "arguments", "valid": bool}]
    signature: str
    strategy: str | None
    queries: list[str]
    docs_retrieved: list[str]  # ids shown in search results, in order, with repeats
    docs_opened: list[str]
    answer: str | None
    reward: float  # total episode reward as the env computed it
    correct: bool  # answer matched a gold answer (the env's success criterion)
    gold_answers: list[str]
    evidence: list[list[str]]
    difficulty: int
    truncated: bool = False
    num_turns: int = 0
    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    token_roles: list[str] = field(default_factory=list)
    source: str = ""  # model/run/demonstrator that produced it
    meta: dict = field(default_factory=dict)

    @property
    def num_tool_calls(self) -> int:
        return len(self.calls)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Trajectory:
        """A record back from its JSON form; unknown keys are ignored, a field of the wrong kind is a
        TypeError naming it (a hand-edited ``"reward": "x"`` would otherwise crash a meter far from here).

        >>> Trajectory.from_json({"task_id": "q", "reward": "x"})
        Traceback (most recent call last):
        ...
        TypeError: reward must be a number, got str 'x'
        """
        if not isinstance(row, dict):
            raise TypeError(f"a record must be a JSON object, got {type(row).__name__}")
        kinds = _field_kinds()
        for key, value in row.items():
            allowed, said = kinds.get(key, ((object,), ""))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):  # bool is an int
                raise TypeError(f"{key} must be {said}, got {type(value).__name__} {value!r:.40}")
        return cls(**{k: v for k, v in row.items() if k in kinds})


@functools.cache
def _field_kinds() -> dict[str, tuple[tuple[type, ...], str]]:
    """Each field's accepted JSON kinds, read off the annotations once: (types, how to say them)."""
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "an object", type(None): "null"}
    out = {}
    for name, hint in typing.get_type_hints(Trajectory).items():
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        kinds = tuple(typing.get_origin(o) or o for o in options)
        kinds += (int,) if float in kinds else ()  # JSON writes 1.0 as 1
        out[name] = (kinds, " or ".join(names[k] for k in dict.fromkeys(kinds) if k is not int or float not in kinds))
    return out


def write_trajectories(path: str | os.PathLike, trajectories: Iterable[Trajectory], *,
                       parquet: bool = True) -> Path:
    """Write a JSONL file atomically (a crash never leaves half a file), and the same records as a Hugging
    Face dataset in Parquet beside it (``x.jsonl`` -> ``x.parquet``, see `write_parquet`)."""
    trajectories = list(trajectories)
    text = "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in trajectories)
    atomic_write(path, text.encode("utf-8"))
    if parquet:
        write_parquet(Path(path).with_suffix(".parquet"), trajectories)
    return Path(path)


# Fields whose values are free-form nested structures (tool arguments, world-specific meta): one JSON string
# each in Parquet, so every file has the same schema whatever the env put in them.
JSON_COLUMNS = ("messages", "calls", "meta", "evidence")


def write_parquet(path: str | os.PathLike, trajectories: Iterable[Trajectory]) -> Path:
    """Trajectories as Parquet, one row each, loadable as a dataset::

        datasets.load_dataset("parquet", data_files="runs/x/trajectories.parquet")["train"]

    Scalar and list fields keep their types; ``messages``, ``calls``, ``meta`` and ``evidence`` are JSON
    strings (``json.loads`` them; `read_parquet` does). Written atomically like the JSONL.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: json.dumps(v, ensure_ascii=False) if k in JSON_COLUMNS else v for k, v in t.to_json().items()}
            for t in trajectories]
    schema = pa.schema([
        ("task_id", pa.string()), ("env_id", pa.string()), ("sample", pa.int64()), ("question", pa.string()),
        ("messages", pa.string()), ("calls", pa.string()), ("signature", pa.string()), ("strategy", pa.string()),
        ("queries", pa.list_(pa.string())), ("docs_retrieved", pa.list_(pa.string())),
        ("docs_opened", pa.list_(pa.string())), ("answer", pa.string()), ("reward", pa.float64()),
        ("correct", pa.bool_()), ("gold_answers", pa.list_(pa.string())), ("evidence", pa.string()),
        ("difficulty", pa.int64()), ("truncated", pa.bool_()), ("num_turns", pa.int64()),
        ("token_logprobs", pa.list_(pa.float32())), ("token_entropies", pa.list_(pa.float32())),
        ("token_roles", pa.list_(pa.string())), ("source", pa.string()), ("meta", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_parquet(path: str | os.PathLike) -> list[Trajectory]:
    """Trajectories back from `write_parquet` (token floats come back as float32 values)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    return [Trajectory.from_json({k: json.loads(v) if k in JSON_COLUMNS else v for k, v in row.items()})
            for row in rows]


def read_trajectories(path: str | os.PathLike) -> Iterator[Trajectory]:
    """Read ``trajectories.jsonl`` (or a run folder containing one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "trajectories.jsonl"
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield Trajectory.from_json(json.loads(line))
                except (json.JSONDecodeError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: not a trajectory record ({e})") from None
