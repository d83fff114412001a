"""Fuzzing a search env: the invariants every searchgym env promises, checked at each step
(`InvariantChecker`), the generated actions that probe them (valid calls, near-misses, garbage and hostile
text), and the loop that drives every registered env with them.

    searchgym fuzz --actions 100000 --embedder hashing     # make fuzz

reports exceptions and violations (`fuzz_command`; ``python -m searchgym.testing`` and
``python -m searchgym.testing.fuzzing`` run the same command). `searchgym.testing.search_env_check` builds the Hypothesis state machine and
`check_search_env` (the one-line check for plug-in authors) on the same checker and actions.
"""

from __future__ import annotations

import json
import random
import sys
import time

import gymnasium

from searchgym.envs.actions import format_tool_call
from searchgym.tasks import ToolCall


class InvariantViolation(AssertionError):
    """An environment broke one of the documented SearchEnv invariants."""


class InvariantChecker:
    """Wraps a made env; `reset`/`step` check every invariant and record the episode for replay.

    Invariants: ``step`` never raises; observations lie in the observation space; rewards lie in the
    documented bounds; ``terminated`` only right after a valid answer; ``truncated`` exactly when the
    step budget is used without an answer; every shown/opened doc id belongs to the corpus; the
    gold answer earns the maximum reward (1.0); the same seed and actions replay identically; a plain
    ``open: ID`` / ``open(ID)`` of a corpus id opens exactly that id (parentheses in the id included).
    """

    def __init__(self, env_id: str, env_kwargs: dict | None = None):
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.env = gymnasium.make(env_id, disable_env_checker=True, **self.env_kwargs)
        self.base = self.env.unwrapped
        self.corpus = self.base.index.corpus
        self.low, self.high = self.base.reward_range
        self.episode: dict | None = None

    def reset(self, seed: int) -> str:
        obs, info = self.env.reset(seed=seed)
        self._expect(self.base.observation_space.contains(obs), "reset observation not in the space")
        self._expect(info["task_id"] in {t.id for t in self.base.tasks}, "reset picked an unknown task")
        self.episode = {"seed": seed, "actions": [], "observations": [obs], "answered": False,
                        "truncated": False, "steps": 0}
        return obs

    def step(self, action, opens: str | None = None) -> tuple:
        """One step, checked; ``opens``: the doc id this action must open (a plain-form open of a real id)."""
        ep = self.episode
        was_over = ep["answered"] or ep["truncated"]
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as e:  # the one thing a step must never do
            raise InvariantViolation(f"step raised {type(e).__name__}: {e} on action {action!r:.200}") from e
        ep["steps"] += 1
        ep["actions"].append(action)
        ep["observations"].append(obs)
        self._expect(self.base.observation_space.contains(obs), f"observation not in the space: {obs!r:.200}")
        self._expect(self.low - 1e-9 <= reward <= self.high + 1e-9,
                     f"reward {reward} outside documented bounds [{self.low}, {self.high}]")
        last = self.base.episode.calls[-1]
        valid_answer = last["valid"] and last["name"] == "answer" and not was_over
        if was_over:
            self._expect(info["error"] is not None, "a call after the episode ended did not return an error")
            self._expect(reward == -self.base.format_penalty, "a call after the end was not penalised")
        else:
            self._expect(terminated == valid_answer, f"terminated={terminated} but valid answer={valid_answer}")
            ep["answered"] = terminated
            budget = not terminated and ep["steps"] >= self.base.max_steps
            self._expect(truncated == budget, f"truncated={truncated} at step {ep['steps']}/{self.base.max_steps}")
            ep["truncated"] = truncated
        for doc_id in (*info["shown"], *info["seen_docs"]):
            self._expect(doc_id in self.corpus, f"doc id {doc_id!r} is not in the corpus")
        if opens is not None and not was_over:
            opened = self.base.tools.state.opened[-1:] if info["error"] is None else [info["error"]]
            self._expect(opened == [opens], f"{action!r:.120} opened {opened[0]!r:.120}, not {opens!r}")
        if valid_answer and info["correct"]:
            self._expect(reward == self.high == 1.0, f"the gold answer earned {reward}, not the maximum 1.0")
        return obs, reward, terminated, truncated, info

    def replay_matches(self) -> None:
        """Replay the current episode in a fresh env: observations must be identical."""
        ep = self.episode
        fresh = gymnasium.make(self.env_id, disable_env_checker=True, **self.env_kwargs)
        observations = [fresh.reset(seed=ep["seed"])[0]]
        observations += [fresh.step(a)[0] for a in ep["actions"]]
        self._expect(observations == ep["observations"], "same seed and actions gave different observations")

    @staticmethod
    def _expect(condition: bool, message: str) -> None:
        if not condition:
            raise InvariantViolation(message)


# -- action generation, shared by the fuzzer and the state machine in searchgym.testing.search_env_check ------------
GARBAGE = [
    "", " ", "hello", "<tool_call>", "<tool_call>{}</tool_call>", '<tool_call>{"name": "search"}</tool_call>',
    '<tool_call>{"name": "fly", "arguments": {}}</tool_call>', '<tool_call>{"name": "open", "arguments": []}',
    '<tool_call>{"name": "search", "arguments": {"query": ""}}</tool_call>',
    '<tool_call>{"name": "search", "arguments": {"query": "x", "k": 3}}</tool_call>',
    '<tool_call>{"name": "answer", "arguments": "{\\"text\\": 5}"}</tool_call>',
    "<tool_call>not json</tool_call>", "search:", "open: ", "answer:", "ANSWER: 42", "open: [nope]",
    '<tool_call>{"name": "search", "arguments": {"query": "a"}}</tool_call><tool_call>{"name": "search", '
    '"arguments": {"query": "b"}}</tool_call>', "\x00\x01\x02", "🙂" * 10, "x" * 5000, None, 42, b"bytes",
]


def random_action(rng: random.Random, base, answers=()) -> object:
    """One action (see `random_case`)."""
    return random_case(rng, base, answers)[0]


def random_case(rng: random.Random, base, answers=()) -> tuple[object, str | None]:
    """One action: a valid call, a near-miss, garbage or hostile text (deep JSON, huge numbers, long
    whitespace, ``<think>`` blocks), with the doc id it must open when it is a plain-form open of a real id (else None)."""
    roll = rng.random()
    shown = base.tools.state.shown
    if roll < 0.35:
        words = rng.sample(_vocabulary(base), k=min(3, len(_vocabulary(base))))
        return format_tool_call(ToolCall("search", {"query": " ".join(words)})), None
    if roll < 0.45 and shown:
        return format_tool_call(ToolCall("open", {"doc_id": rng.choice(shown)})), None
    if roll < 0.5:
        doc_id = rng.choice(shown if shown and rng.random() < 0.5 else parenthesised_ids(base))
        return plain_open(rng, doc_id), doc_id
    if roll < 0.58:
        text = rng.choice(list(answers) or ["unknown"]) if rng.random() < 0.5 else _random_text(rng, 12)
        return format_tool_call(ToolCall("answer", {"text": text})), None
    if roll < 0.7:
        return rng.choice(GARBAGE), None
    if roll < 0.8:
        return rng.choice((deep_nesting, huge_number, whitespace_run, reasoning_block))(rng), None
    return _random_text(rng, rng.randint(0, 200)), None


def plain_open(rng: random.Random, doc_id: str) -> str:
    """The lenient plain form of ``open(doc_id)``, in one of its spellings."""
    return rng.choice(["open: {}", "open({})", "OPEN ( {} )", "open:{}\n", "Open({})<|im_end|>"]).format(doc_id)


def deep_nesting(rng: random.Random) -> str:
    """JSON nested up to thousands deep (json.loads used to raise RecursionError near 1,000)."""
    n = rng.choice([32, 33, 999, 1000, 2000, rng.randint(1, 4000)])
    body = rng.choice(["[" * n + "]" * n, '{"a": ' * n + "1" + "}" * n, "[" * n, '"' + "[" * n + '"'])
    return rng.choice(["<tool_call>BODY</tool_call>", "BODY", '<tool_call>{"name": "search", "arguments": BODY}',
                       '{"name": "open", "arguments": {"doc_id": BODY}}']).replace("BODY", body)


def huge_number(rng: random.Random) -> str:
    """Number literals of up to 5,000 digits (json refuses ints over 4,300 with a ValueError)."""
    n = rng.choice([100, 101, 4300, 4301, rng.randint(1, 5000)])
    number = rng.choice(["", "-"]) + rng.choice(["9" * n, "1" + "0" * (n - 1), "1." + "0" * n, f"1e{'9' * min(n, 9)}"])
    return rng.choice(['<tool_call>{"name": "answer", "arguments": {"text": NUM}}</tool_call>', '{"name": NUM}',
                       '<tool_call>{"name": "search", "arguments": "{\\"query\\": NUM}"}</tool_call>',
                       "answer: NUM"]).replace("NUM", number)


def whitespace_run(rng: random.Random) -> str:
    """Long runs of whitespace around the parser's anchors (regexes with \\s* used to take quadratic time)."""
    ws = rng.choice([" ", "\n", "\t", "\u3000", "\r\n", " \n"]) * rng.choice([1000, 2000, 4096, rng.randint(1, 9000)])
    return rng.choice(["WS", "search:WSx", "<tool_call>WS", "WS</tool", "<tool_call>WS<", "open(WSx)WS",
                       "answerWS:WSy", "WS<|im_end|>WS", '{"name": "answer",WS"arguments": {"text": "x"}}']).replace("WS", ws)


def reasoning_block(rng: random.Random) -> str:
    """A reasoning model's ``<think>`` blocks around a call: long, unclosed, repeated or nested tags (the
    stripping before parsing must stay linear and never raise)."""
    think = "<think>" + _random_text(rng, rng.choice([0, 50, 5000, rng.randint(1, 20000)])) + "</think>"
    call = format_tool_call(ToolCall("search", {"query": _random_text(rng, 8)}))
    return rng.choice([think + call, think * rng.randint(2, 50) + call, "<think>" * rng.randint(1, 3000) + call,
                       call + "<think>", "</think>" * rng.randint(1, 3000) + call, "<think><think>x</think>" + call,
                       think[:rng.randint(0, len(think))]])


def _random_text(rng: random.Random, n: int) -> str:
    pools = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x0, 0x1F)]
    return "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(n))


_VOCAB: dict[int, list[str]] = {}
_PAREN_IDS: dict[int, list[str]] = {}


def parenthesised_ids(base) -> list[str]:
    """Corpus ids with parentheses ("wiki:Casablanca (film)"), else a few ids of any kind."""
    key = id(base.index.corpus)
    if key not in _PAREN_IDS:
        ids = list(base.index.corpus.ids)
        _PAREN_IDS[key] = [i for i in ids if "(" in i or ")" in i][:500] or ids[:50]
    return _PAREN_IDS[key]


def _vocabulary(base) -> list[str]:
    key = id(base.index.corpus)
    if key not in _VOCAB:
        words = set()
        for doc in base.index.corpus.documents[:300]:
            words.update(w for w in doc.title.split() if w.isalpha())
        _VOCAB[key] = sorted(words) or ["document"]
    return _VOCAB[key]


# -- the fuzzer ----------------------------------------------------------------------------------
def fuzz(env_ids: list[str], actions: int, *, env_kwargs: dict | None = None, seed: int = 0,
         progress: bool = True) -> dict:
    """Drive each env with ``actions`` generated actions in total; count exceptions and violations."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    per_env = max(1, actions // len(env_ids))
    report = {"actions": 0, "episodes": 0, "exceptions": 0, "violations": 0, "failures": [], "per_env": {}}
    for env_id in env_ids:
        checker = InvariantChecker(env_id, env_kwargs)
        start, done, episodes = time.perf_counter(), 0, 0
        checker.reset(rng.randrange(2**31))
        for _ in tqdm(range(per_env), desc=env_id, disable=not progress, mininterval=1.0):
            ep = checker.episode
            if ep["answered"] or ep["truncated"]:
                if rng.random() < 0.05:
                    checker.replay_matches()
                if rng.random() < 0.9:  # mostly start over; sometimes keep poking the ended episode
                    checker.reset(rng.randrange(2**31))
                    episodes += 1
            try:
                checker.step(*random_case(rng, checker.base, checker.base.task.answers))
            except InvariantViolation as e:
                kind = "exceptions" if e.__cause__ is not None else "violations"
                report[kind] += 1
                report["failures"].append(f"{env_id}: {e}")
                checker.reset(rng.randrange(2**31))
            done += 1
        report["actions"] += done
        report["episodes"] += episodes
        report["per_env"][env_id] = {"actions": done, "episodes": episodes,
                                     "actions_per_s": round(done / (time.perf_counter() - start), 1)}
    report["failures"] = report["failures"][:20]
    return report


def check_fuzz_options(actions: int, env_ids, embedder: str | None) -> list[str]:
    """The env ids to fuzz (default: every registered id), or ValueError naming the bad option in one line."""
    from searchgym.corpus.embedders import check_embedder
    from searchgym.envs import registered_envs

    registered = list(registered_envs())
    ids = list(dict.fromkeys(env_ids or ())) or registered
    unknown = [e for e in ids if e not in registered]
    if unknown:
        raise ValueError(f"--env: {unknown[0]!r} is not a registered environment; allowed: {', '.join(registered)}")
    if actions < len(ids):
        raise ValueError(f"--actions: at least one action per env ({len(ids)} envs), got {actions}")
    if embedder is not None:
        check_embedder(embedder)  # EmbedderError is a ValueError: one line, before any index is built
    return ids


def fuzz_command(actions: int = 100_000, env_ids=(), *, embedder: str | None = None, seed: int = 0,
                 progress: bool | None = None) -> dict:
    """`searchgym fuzz`: fuzz the envs, print one line per env, the failures and (last line) the report as
    JSON; returns the report. ``progress``: None shows the bars on a terminal for runs of 5,000+ actions."""
    ids = check_fuzz_options(actions, env_ids, embedder)
    if progress is None:
        progress = actions >= 5_000 and sys.stderr.isatty()
    report = fuzz(ids, actions, env_kwargs={"embedder": embedder} if embedder else None, seed=seed,
                  progress=progress)
    for env_id, row in report["per_env"].items():
        print(f"{env_id:45s} {row['actions']:>8d} actions {row['episodes']:>6d} episodes "
              f"{row['actions_per_s']:>8.1f} actions/s")
    for failure in report["failures"]:
        print("FAIL", failure)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    # The old name of `searchgym fuzz`: run the package's entry point (`searchgym/testing/__main__.py`), which
    # calls the CLI. By module name, not an import: the CLI imports this module, and nothing imports the CLI back.
    import runpy

    runpy.run_module("searchgym.testing", run_name="__main__", alter_sys=True)
