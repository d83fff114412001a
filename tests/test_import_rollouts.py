"""`searchgym meter` on other trainers' rollouts (issue #26): the shipped chat and Search-R1 examples metered
through the real CLI entry point, with values checked against what the files were written to hold, the field
map, format detection, and malformed lines refused in one line naming the file, the line and the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.report.importers import read_rollouts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "rollouts"
CHAT, R1 = EXAMPLES / "chat.jsonl", EXAMPLES / "search-r1.jsonl"
# Correct samples of 4 per question, as the examples were written (chat: reward 1; Search-R1: an answer that
# matches a golden answer after normalisation, e.g. "Quillon" = "quillon", "the ninth of March").
CHAT_CORRECT = {"c01": 4, "c02": 3, "c03": 2, "c04": 0, "c05": 1, "c06": 4, "c07": 2, "c08": 0}
R1_CORRECT = [4, 2, 3, 1, 0, 4, 2, 1]


def pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def meter(tmp_path: Path, *args: str) -> tuple[int, str, dict | None]:
    out = tmp_path / "m.json"
    out.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["meter", *args, "--out", str(out)])
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else None


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_chat_example_meters_through_the_cli(tmp_path):
    code, output, doc = meter(tmp_path, str(CHAT))
    assert code == 0, output
    [block] = doc["inputs"]
    m = block["meters"]
    assert (block["format"], block["n"], block["questions"]) == ("chat", 4, 8)
    # the rewards as written: correct = reward >= 1 (no gold answers in this file)
    assert {r["question_id"] for r in rows(CHAT)} == set(CHAT_CORRECT)
    for qid, c in CHAT_CORRECT.items():
        assert sum(r["reward"] for r in rows(CHAT) if r["question_id"] == qid) == c
    for k in (1, 2, 4):
        assert m[f"passk/pass@{k}"] == pytest.approx(sum(pass_at_k(4, c, k) for c in CHAT_CORRECT.values()) / 8)
    assert m["passk/pass@4"] == 0.75 and m["reward/success"] == 0.5
    # two invalid calls: broken JSON arguments (c04) and a search answered "Error: …" (c02), each 1 of 8 calls
    assert m["search/invalid_frac"] == pytest.approx((1 / 8 + 1 / 8) / 8)
    # documents from the JSON search results and the open calls' doc ids, distinct per question
    assert m["search/unique_docs"] == (2 + 2 + 2 + 3 + 2 + 2 + 3 + 2) / 8
    assert m["search/unique_opened"] == 3 / 8
    # token entropy by sampling: the mean surprisal of the logged tokens, pooled per question
    logprobs: dict[str, list[float]] = {}
    for r in rows(CHAT):
        logprobs.setdefault(r["question_id"], []).extend(r["token_logprobs"])
    expected = sum(-sum(lp) / len(lp) for lp in logprobs.values()) / 8
    assert m["entropy/sequence_per_token"] == pytest.approx(expected)
    # no world, no per-token entropies, no reference: those meters are left out, with the note
    for key in ("diversity/strategy_entropy_mm", "diversity/strategy_entropy_jk", "entropy/token", "kl/k1",
                "search/evidence_coverage"):
        assert key not in m
    assert "diversity/strategy_" in block["import_notes"][0] and "no world's strategy labels" in output
    assert "correct = reward >= 1" in output
    assert m["diversity/signature_entropy_mm"] > 0 and m["diversity/answer_distinct"] > 1


def test_chat_example_records_read_as_their_episodes():
    t = {(x.task_id, x.sample): x for x in read_rollouts(CHAT).trajectories}
    assert t["c01", 0].signature == "S A" and t["c01", 0].docs_retrieved == ["d01", "d02"]
    assert t["c01", 2].answer == "Tessaly"  # "The capital is <answer>Tessaly</answer>." in a plain message
    assert t["c04", 1].signature == "X S A" and t["c04", 1].calls[0]["error"] == "arguments are not valid JSON"
    assert t["c02", 2].signature == "X S A" and t["c02", 2].queries == ["Oridian Glassworks founder"]
    assert t["c06", 0].queries == t["c06", 3].queries  # every sample of c06 searched the same
    assert t["c01", 1].docs_opened == ["d02"] and t["c04", 2].signature == "A"
    assert {len({q for s in range(4) for q in t[qid, s].queries}) for qid in ("c06", "c03")} == {1, 3}
    assert all("id" not in call for x in t.values() for m in x.messages for call in m.get("tool_calls", []))


def test_search_r1_example_meters_through_the_cli(tmp_path):
    code, output, doc = meter(tmp_path, str(R1))
    assert code == 0, output
    [block] = doc["inputs"]
    m = block["meters"]
    assert (block["format"], block["n"], block["questions"]) == ("search-r1", 4, 8)  # grouped by question text
    for k in (1, 2, 4):
        assert m[f"passk/pass@{k}"] == pytest.approx(sum(pass_at_k(4, c, k) for c in R1_CORRECT) / 8)
    assert m["reward/success"] == 17 / 32 and m["reward/mean"] == 17 / 32  # the rewards written agree with EM
    # invalid: one "My previous action is invalid" of 8 calls (q2), an unclosed <search> of 6 (q4), two of 7 (q5)
    assert m["search/invalid_frac"] == pytest.approx((1 / 8 + 1 / 6 + 2 / 7) / 8)
    for key in ("entropy/sequence", "search/unique_opened", "diversity/strategy_entropy_mm"):
        assert key not in m
    assert "Search-R1 has no open action" in output and "exact match of the answer with a gold answer" in output


def test_search_r1_text_reads_past_the_prompt_template():
    """The prompt quotes "<search> query </search>" and "<answer> Beijing </answer>": neither is an action."""
    trajectories = read_rollouts(R1).trajectories
    by_question: dict[str, list] = {}
    for t in trajectories:
        by_question.setdefault(t.question, []).append(t)
    assert len(by_question) == 8 and all(len(g) == 4 for g in by_question.values())
    assert not any("query" in t.queries or t.answer == "Beijing" for t in trajectories)
    lake = by_question["Which is the deepest lake of the Calder Basin?"]
    assert [t.signature for t in lake] == ["S A", "S S A", "S A", "S A"]
    assert len({q for t in lake for q in t.queries}) == 3
    assert lake[0].docs_retrieved == ["Lake Orvane", "Calder Basin"]  # the titles of "Doc k(Title: …)"
    cup = by_question["Which club won the first Harrow Cup?"]
    assert cup[2].signature == "X" and cup[2].answer is None and cup[2].truncated  # cut off inside <search>
    assert [t.correct for t in cup] == [True, False, False, False]


def test_the_field_map_reads_other_names(tmp_path):
    renamed = tmp_path / "renamed.jsonl"
    renamed.write_text("".join(json.dumps({"conv_id": r["question_id"], "messages": r["messages"],
                                           "extra": {"acc": r["reward"]}, "logprobs": r["token_logprobs"]}) + "\n"
                               for r in rows(CHAT)))
    _, _, original = meter(tmp_path, str(CHAT))
    code, output, doc = meter(tmp_path, str(renamed), "--field", "question_id=conv_id", "--field", "reward=extra.acc")
    assert code == 0, output
    assert doc["inputs"][0]["meters"] == original["inputs"][0]["meters"]
    # without the map: grouped by question text (same groups), but no reward: reward/ and passk/ left out
    code, output, doc = meter(tmp_path, str(renamed))
    m = doc["inputs"][0]["meters"]
    assert code == 0 and doc["inputs"][0]["questions"] == 8 and not any(k.startswith(("passk/", "reward/")) for k in m)
    assert "no reward, correct flag or gold answers" in output
    # a mapped field that is missing is named
    code, output, _ = meter(tmp_path, str(renamed), "--field", "reward=extra.score")
    assert code == 2 and "renamed.jsonl:1: extra.score: missing (mapped by --field reward=extra.score)" in output


def test_trl_prompt_and_completion_lists_with_openai_logprobs(tmp_path):
    path = tmp_path / "trl.jsonl"
    records = []
    for q, answer in (("Capital of Peru?", "Lima"), ("Capital of Chile?", "Santiago")):
        for i, said in enumerate((answer, "Quito")):
            call = {"type": "function", "function": {"name": "web_search", "arguments": {"query": q}}}
            completion = [{"role": "assistant", "tool_calls": [call]},
                          {"role": "tool", "content": f'{{"results": [{{"url": "u{i}"}}]}}'},
                          {"role": "assistant", "content": said,
                           "logprobs": {"content": [{"token": "x", "logprob": -0.5}, {"token": "y", "logprob": -1.5}]}}]
            records.append({"prompt": [{"role": "user", "content": q}], "completion": completion,
                            "ground_truth": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, output, doc = meter(tmp_path, str(path))
    m = doc["inputs"][0]["meters"]
    assert code == 0, output
    assert doc["inputs"][0]["format"] == "chat" and m["passk/pass@1"] == 0.5 and m["passk/pass@2"] == 1.0
    assert m["search/unique_docs"] == 2 and m["entropy/sequence_per_token"] == 1.0
    assert "exact match of the answer with a gold answer" in output


def _one_line_error(code: int, output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


CHAT_BREAKS = [
    (lambda r: "{oops", "chat.jsonl:3: line: not JSON"),
    (lambda r: r | {"messages": "hello"}, "chat.jsonl:3: messages: must be a list of messages, got str"),
    (lambda r: r | {"messages": [r["messages"][0], {"role": "bot", "content": "?"}]},
     "chat.jsonl:3: messages[1].role: must be one of ['system', 'developer', 'user', 'assistant', 'tool'], got 'bot'"),
    (lambda r: r | {"messages": r["messages"][:2] + [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
     "chat.jsonl:3: messages[2].tool_calls[0].function.name: missing"),
    (lambda r: r | {"reward": "high"}, "chat.jsonl:3: reward: must be a finite number, got str 'high'"),
    (lambda r: r | {"token_logprobs": [-1.0, "x"]}, "chat.jsonl:3: token_logprobs: must be a list of numbers"),
    (lambda r: r | {"question_id": [1]}, "chat.jsonl:3: question_id: must be a string or an integer, got list"),
]
R1_BREAKS = [
    (lambda r: r | {"golden_answers": {"a": 1}}, "search-r1.jsonl:3: golden_answers: must be a string or a list"),
    (lambda r: r | {"text": 42}, "search-r1.jsonl:3: text: must be a string, got int"),
    (lambda r: {k: v for k, v in r.items() if k != "text"}, "search-r1.jsonl:3: text: missing: the generated text"),
    (lambda r: r | {"correct": "yes"}, "search-r1.jsonl:3: correct: must be true, false, 0 or 1, got str 'yes'"),
]


@pytest.mark.parametrize("source, break_line, message", [(CHAT, b, m) for b, m in CHAT_BREAKS]
                         + [(R1, b, m) for b, m in R1_BREAKS], ids=[m.split(": ", 2)[1] for _, m in CHAT_BREAKS]
                         + ["r1 " + m.split(": ", 2)[1] for _, m in R1_BREAKS])
def test_a_malformed_line_is_one_line_naming_file_line_and_field_before_any_metering(source, break_line, message,
                                                                                      tmp_path, monkeypatch):
    import searchgym.report.meter_command as meter_command

    def no_metering(*args, **kwargs):
        raise AssertionError("metering started before every line was read")

    monkeypatch.setattr(meter_command, "per_question", no_metering)
    lines = source.read_text().splitlines()
    broken = break_line(json.loads(lines[2]))
    lines[2] = broken if isinstance(broken, str) else json.dumps(broken)
    path = tmp_path / source.name
    path.write_text("\n".join(lines) + "\n")
    code, output, doc = meter(tmp_path, str(path))
    assert message in _one_line_error(code, output) and doc is None


@pytest.mark.parametrize("args, message", [
    (["--format", "bogus"], "--format must be one of ['auto', 'searchgym', 'chat', 'search-r1'], got 'bogus'"),
    (["--field", "qid=uid"], "--field qid=uid: the field must be one of ['completion', 'correct'"),
    (["--field", "question_id"], "--field 'question_id': write it as field=key"),
    (["--format", "search-r1"], "chat.jsonl:1: text: missing"),
])
def test_bad_options_are_one_line(args, message, tmp_path):
    code, output, _ = meter(tmp_path, str(CHAT), *args)
    assert message in _one_line_error(code, output)


def test_format_detection_and_run_folders(tmp_path):
    unknown = tmp_path / "x.jsonl"
    unknown.write_text("\n{\"prompt\": \"hi\", \"text\": \"no tags here\"}\n")
    code, output, _ = meter(tmp_path, str(unknown))
    assert "x.jsonl:2: cannot tell the format of the first record" in _one_line_error(code, output)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trajectories.jsonl").write_text(CHAT.read_text())
    code, output, _ = meter(tmp_path, str(tmp_path / "run"), "--format", "chat")
    assert "run is a run folder: --format chat reads .jsonl files" in _one_line_error(code, output)
    # both examples side by side: different questions, so no paired comparison, and both metered
    code, output, doc = meter(tmp_path, str(CHAT), str(R1))
    assert code == 0 and [b["format"] for b in doc["inputs"]] == ["chat", "search-r1"]


def test_report_draws_rollout_files_as_arms(tmp_path, monkeypatch):
    """`searchgym report base.jsonl arm.jsonl`: each file an arm named by its stem, base.jsonl the base."""
    monkeypatch.chdir(tmp_path)  # the default output folder is ./report
    (tmp_path / "base.jsonl").write_text(CHAT.read_text())
    arm = rows(CHAT)
    for r in arm:  # the arm solves c08 once and loses c01 entirely
        r["reward"] = {"c01": 0.0}.get(r["question_id"], r["reward"])
    arm[-1]["reward"] = 1.0
    (tmp_path / "arm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arm))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "base.jsonl"), str(tmp_path / "arm.jsonl"),
                                      "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["n"] == 4 and doc["questions"] == 8
    vs_base = doc["arms"]["arm"]["vs_base"]  # c08 solved only by the arm, c01 only by the base
    assert (vs_base["coverage/new"], vs_base["coverage/lost"], vs_base["coverage/arm_pass@1"]) == (1 / 8, 1 / 8, 13 / 32)
    assert any(n.startswith("arm: left out: diversity/strategy_") for n in doc["notes"])
    assert "left out: diversity/strategy_" in (tmp_path / "rep" / "report.md").read_text()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "arm.jsonl"), "--format", "search-r1"])
    assert "arm.jsonl:1: text: missing" in _one_line_error(result.exit_code, result.output)
    (tmp_path / "loose.jsonl").write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in arm))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "loose.jsonl")])
    assert "no record carries a reward" in _one_line_error(result.exit_code, result.output)
    assert not (tmp_path / "report").exists()
