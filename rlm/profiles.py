"""Model profiles: what rlm knows about a model family, and how it prompts and calls it.

A :class:`Profile` holds, for one family of models:

* ``window`` — its context window in tokens, used when neither the models file nor,
  for a hosted API, litellm's bundled map (:mod:`rlm.model_info`) says (see :func:`window`);
* ``style`` — the system prompt's style (:mod:`rlm.prompts`): ``"full"``, ``"compact"``,
  or ``None`` for "by the window" (compact up to 16,384 tokens);
* ``examples`` — whether the worked example is sent as chat turns before the task
  (``None``: with the compact style);
* ``stop`` — stop sequences sent with an agent's own turns;
* ``grammar`` — whether an agent's own turns carry llama.cpp's ``grammar`` field
  (:data:`REPLY_GRAMMAR`, GBNF), so that every reply is exactly one ```repl block.

A model is matched by its litellm string, lower-cased (``openai/Qwen/Qwen3-8B`` ->
``qwen3``), the first profile whose pattern is found in it winning; a deployment in
the models file may name its profile instead (``profile = "qwen3"``, for a
self-hosted model whose served name says nothing) and override ``grammar`` and
``stop``. A family listed nowhere gets :data:`DEFAULT_PROFILE`: window unknown,
style by window, no stop sequences, no grammar.

Stop sequences and the grammar apply to an agent's own turns only: a sub-call
(``llm_query``) or the benchmarks' direct call answers in prose.

Where the numbers come from (each profile's ``source``): the providers' model pages
and model cards as cited, cross-checked against litellm's bundled map where it has
the model; the embedded model's window is the ``n_ctx`` its llama.cpp server is
started with (:mod:`rlm.local_model`). The embedded profile sends no stop sequences and
no grammar: measured, the grammar changed no answer and cost time, and the model
never ran past its code block (``benchmarks/reports/profiles.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rlm.errors import ConfigError

__all__ = ["Profile", "PROFILES", "DEFAULT_PROFILE", "EMBEDDED_PROFILE", "REPLY_GRAMMAR", "FULL", "COMPACT",
           "profile_for", "profile_named", "window", "turn_params"]

FULL = "full"
COMPACT = "compact"

#: Every reply one ```repl block: lines that do not start with a backtick, then the closing fence.
#: llama.cpp's server takes it as the request's ``grammar`` (GBNF); generation ends with the fence.
REPLY_GRAMMAR = r'''root ::= "```repl\n" line+ "```"
line ::= [^`\n] [^\n]* "\n" | "\n"
'''


@dataclass(frozen=True, slots=True)
class Profile:
    """What rlm knows about one model family (see the module docstring)."""

    name: str
    #: A regular expression searched in the lower-cased model string.
    pattern: str
    window: int | None = None
    style: str | None = None
    examples: bool | None = None
    stop: tuple[str, ...] = ()
    grammar: bool = False
    source: str = ""

    def matches(self, model: str) -> bool:
        """Whether ``model`` (a litellm model string) belongs to this family."""
        return re.search(self.pattern, model.lower()) is not None


#: The embedded default: SmolLM2 (135M) under llama.cpp, window = the n_ctx rlm starts it with.
EMBEDDED_PROFILE = Profile(
    "smollm2", r"smollm2", window=8_192, style=COMPACT, examples=True,
    source="rlm.local_model starts llama.cpp with n_ctx 8192; SmolLM2 was trained to 8k (Allal et al., "
           "arXiv:2502.02737). Compact prompt and worked example: benchmarks/reports/prompts.md; no grammar, "
           "no stop: benchmarks/reports/profiles.md.")

PROFILES: tuple[Profile, ...] = (
    EMBEDDED_PROFILE,
    # Before qwen3: "DeepSeek-R1-0528-Qwen3-8B" is R1-distilled.
    Profile("deepseek-r1", r"deepseek-r1|deepseek-reasoner", window=131_072, examples=False,
            source="DeepSeek-R1 model card: 128K context; few-shot prompting consistently degrades it "
                   "(DeepSeek-AI, arXiv:2501.12948, section 5): no worked example turns. No stop "
                   "sequences: a stop string inside its reasoning would cut the reply."),
    Profile("qwen3-long", r"qwen3(\.\d|-coder|-next|.*-2507)", window=262_144,
            source="Qwen3-2507, Qwen3-Coder, Qwen3-Next model cards: 262,144 tokens natively."),
    Profile("qwen3", r"qwen3", window=32_768,
            source="Qwen3 model cards: 32,768 tokens natively (131,072 with YaRN: write context_window for a "
                   "server started so). No stop sequences: thinking mode."),
    Profile("llama-3", r"llama-?3(?![.\d])", window=8_192,
            source="Meta Llama 3 model card: 8k context."),
    Profile("llama", r"llama-?(3\.\d|4)", window=131_072,
            source="Meta Llama 3.1, 3.2, 3.3 model cards: 128k context (Llama 4: 1M or more as hosted; "
                   "self-hosted servers are usually started shorter)."),
    Profile("gpt-5", r"(^|/)gpt-5", window=272_000,
            source="OpenAI GPT-5 model page: 400,000 context, 128,000 output. OpenAI's reasoning models "
                   "reject a stop parameter (litellm's GPT-5 config lists it unsupported)."),
    Profile("gpt-4.1", r"(^|/)gpt-4\.1", window=1_047_576, source="OpenAI GPT-4.1 model page: 1,047,576 tokens."),
    Profile("openai-o", r"(^|/)o[134](-|$)", window=200_000,
            source="OpenAI o1, o3, o4-mini model pages: 200,000 context, 100,000 output. No stop: reasoning."),
    Profile("claude", r"claude", window=200_000,
            source="Anthropic models overview: 200K context (newer models 1M: litellm's map, read first, says)."),
    Profile("gemini", r"gemini", window=1_048_576,
            source="Google Gemini 2.x model pages: 1,048,576 input tokens."),
)

#: A family listed nowhere: window unknown (the models file's, else litellm's map), style by window.
DEFAULT_PROFILE = Profile("default", r"(?!)", source="no family matched")


def profile_named(name: str) -> Profile:
    """The profile called ``name``; a :class:`ConfigError` listing the names when there is none."""
    for profile in (*PROFILES, DEFAULT_PROFILE):
        if profile.name == name:
            return profile
    names = ", ".join(p.name for p in (*PROFILES, DEFAULT_PROFILE))
    raise ConfigError(f"no model profile named {name!r} (profiles: {names})")


def profile_for(model: str, name: str | None = None) -> Profile:
    """The profile named ``name``, else the first whose pattern matches ``model``, else the default."""
    if name:
        return profile_named(name)
    return next((p for p in PROFILES if p.matches(model)), DEFAULT_PROFILE)


def window(model: str, *, api_base: str | None = None, context_window: int | None = None,
           profile: Profile | None = None) -> int | None:
    """A model's context window in tokens, or ``None`` when unknown. The one rule, in order:

    1. ``context_window`` from the models file;
    2. for a hosted API (no ``api_base``; not ``local/``), litellm's bundled map, which knows
       each model exactly (read without importing litellm);
    3. the profile's window for the family;
    4. unknown.

    A self-hosted server's window is what it was started with, which the map cannot know, so
    for those the family's usual window stands in until the file says otherwise.
    """
    if context_window:
        return context_window
    if not api_base and not model.startswith("local/"):
        from rlm import model_info

        mapped = model_info.info(model).max_input_tokens
        if mapped:
            return mapped
    return (profile or profile_for(model)).window


def turn_params(profile: Profile, *, grammar: bool | None = None,
                stop: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The request fields of an agent's own turn: the profile's, or a deployment's overrides of them."""
    params: dict[str, Any] = {}
    stops = profile.stop if stop is None else stop
    if stops:
        params["stop"] = list(stops)
    if profile.grammar if grammar is None else grammar:
        params["grammar"] = REPLY_GRAMMAR
    return params
