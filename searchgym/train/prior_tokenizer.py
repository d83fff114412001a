"""The prior's tokenizer, and which strings it keeps whole.

A from-scratch prior reads ChatML with tool calls; what is one token decides what it must learn. Merges stay
inside words, the conversation's fixed scaffold is one token (`scaffold_blocks`), and the prior lab's levers
make more of it atomic: each tool call's fixed JSON (`call_blocks`, ``pretrain.call_tokens``) and the world's
names and doc ids (``words``, ``pretrain.name_tokens``). `scramble_names` renames a demo consistently
(``pretrain.scramble_names``). docs/prior-lab.md measures each lever.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from searchgym.util.config_schema import ConfigError

# ChatML as SmolLM2 and TRL's qwen2_5 template write it. The tool tags are added as whole tokens but NOT
# special: TRL decodes completions with skip_special_tokens=True and must still see <tool_call> to parse.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOOL_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# BPE merges stay inside words (GPT-2's pre-tokenizer regex): a name then splits into the same tokens in a
# question, a document and a query, so copying it is one skill. (Merging across spaces made a first prior
# 3x shorter per demo but tokenised "Morutrofair" differently before a space and before a quote, and it
# hallucinated names instead of copying them.) The fixed scaffolding of every conversation, the system
# prompt plus the tool schemas (~550 word tokens), becomes ONE added token instead (`scaffold_blocks`).
# A merge must recur this often, so rare text is not swallowed whole into a token the model cannot generalise.
MIN_MERGE_FREQUENCY = 10


def scramble_names(text: str, lexicon: Sequence[str], rng: random.Random) -> str:
    """Rename a conversation consistently: every name word of ``lexicon`` is swapped for another name word
    and every doc id for another id of the same kind (``syn:person:0042`` -> ``syn:person:0017``, its ``:b``
    page following), one random permutation per call. The facts inside the conversation stay coherent,
    but no name or id says which question it belongs to, so a model can only act well by copying from
    the context (``pretrain.scramble_names``).

    >>> lex = ["Ilvar", "Tessa", "Morut", "syn:person:0001", "syn:person:0001:b", "syn:person:0002"]
    >>> out = scramble_names("Ilvar Tessa [syn:person:0001:b] Ilvar", lex, random.Random(1))
    >>> words = out.replace("[", " ").replace("]", " ").split()
    >>> words[0] == words[3] and words[0] in lex and words[2].endswith(":b") and out != "Ilvar Tessa [syn:person:0001:b] Ilvar"
    True
    """
    groups: dict[str, list[str]] = {}  # capitalised names, lower-case words (currencies), ids per kind
    for w in lexicon:
        if w.startswith("syn:"):
            if w.count(":") == 2:
                groups.setdefault(w.split(":")[1], []).append(w)
        else:
            groups.setdefault("Name" if w[0].isupper() else "word", []).append(w)
    mapping: dict[str, str] = {}
    for members in groups.values():
        mapping.update(zip(members, rng.sample(members, len(members))))
    pattern = re.compile(r"(?<![\w:])(syn:[a-z]+:\d+|[A-Za-z]\w*)")

    def swap(m: re.Match) -> str:
        return mapping.get(m.group(1), m.group(1))

    return pattern.sub(swap, text)


def scaffold_blocks() -> list[str]:
    """The text every conversation repeats verbatim: the system turn with the env's system prompt and tool
    schemas, as the Qwen2.5 template (SFT, rollouts, TRL's GRPO) renders it, minus the ChatML markers."""
    from searchgym.envs.tools import SYSTEM_PROMPT, SearchTools

    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "?"}]
    text = train_tokenizer(["x"], 300).apply_chat_template(messages, tools=SearchTools.schemas(), tokenize=False)
    start = text.index(BOS) + len(BOS)
    return [text[start:text.index(EOS, start)]]


def call_blocks() -> list[str]:
    """The fixed text of every tool call around its one argument, as the chat template renders it: the
    opening per tool, then the closing they share (``pretrain.call_tokens`` makes each one token).

    >>> call_blocks()[-1]
    '"}}\\n</tool_call>'
    """
    from searchgym.envs.actions import TOOL_ARGUMENTS, format_tool_call
    from searchgym.tasks import ToolCall

    rendered = [format_tool_call(ToolCall(name, {arg: "ARG"})).split('"ARG"')
                for name, arg in TOOL_ARGUMENTS.items()]
    return [head + '"' for head, _ in rendered] + ['"' + rendered[0][1]]


def train_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = MIN_MERGE_FREQUENCY,
                    blocks: Sequence[str] = (), words: Sequence[str] = ()):
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML tokens and TRL's Qwen2.5 chat template
    (the one TRL parses tool calls from), as a transformers fast tokenizer. The ChatML and tool tags are
    added tokens, so they also bound every merge; ``blocks`` (long fixed texts) become one token each, and
    so does each of ``words`` where it stands as a whole word (a name, a doc id; the longest match wins).

    >>> tok = train_tokenizer(["<tool_call>\\n{}\\n</tool_call><|im_end|> Mor Morut"] * 20, 300, blocks=["fixed text"])
    >>> tok.tokenize('<tool_call>\\n{}\\n</tool_call><|im_end|>')
    ['<tool_call>', 'Ċ', '{}', 'Ċ', '</tool_call>', '<|im_end|>']
    >>> tok.tokenize('of Morut" Morut.'), tok.tokenize("a fixed text")
    (['o', 'f', 'ĠMorut', '"', 'ĠMorut', '.'], ['a', 'Ġ', 'fixed text'])
    >>> tok = train_tokenizer(["x"] * 20, 300, words=["Morut", "syn:city:0001", "syn:city:0001:b"])
    >>> tok.tokenize('"Morut syn:city:0001:b Moruts [syn:city:0001]')[:4]
    ['"', 'Morut', 'Ġ', 'syn:city:0001:b']
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen2_5_chat_template

    if vocab_size < 300:
        raise ConfigError(f"pretrain.vocab_size: byte-level BPE needs >= 300 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (*TOOL_TAGS, *blocks)])
    tok.add_tokens([AddedToken(w, special=False, normalized=False, single_word=True) for w in words])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                        unk_token=PAD)
    tokenizer.chat_template = qwen2_5_chat_template
    tokenizer.padding_side = "left"  # as load_model leaves it: generation appends on the right
    from searchgym.agent.models import declare_merged_control_tokens

    declare_merged_control_tokens(tokenizer)  # whole-call tokens emit <tool_call> (see its docstring)
    return tokenizer
