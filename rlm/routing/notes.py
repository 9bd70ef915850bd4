"""What a model is told about the model groups it may ask for (one line of its system prompt).

:func:`groups_note` names each group with its largest window and its
``description`` from the models file, so that ``llm_query(prompt, model="heavy")``
and ``rlm_query(prompt, context=chunk, model="heavy")`` use names that exist (an
unknown name is an error the model sees). Without a models file the note is
empty: the two default groups need no choosing.
"""

from __future__ import annotations

from rlm.config import RLMConfig
from rlm.routing.table import RouteTable

__all__ = ["groups_note"]


def groups_note(config: RLMConfig, table: RouteTable | None = None) -> str:
    """One line for the system prompt listing the groups ``model=`` may name ('' without a models file)."""
    if config.models is None:
        return ""
    table = table or RouteTable(config)
    names = []
    for name, targets in table.groups.items():
        windows = [t.window for t in targets if t.window]
        facts = [f"{max(windows):,}-token window"] if windows else []
        if table.descriptions.get(name):
            facts.insert(0, table.descriptions[name])
        names.append(f"`{name}`" + (f" ({'; '.join(facts)})" if facts else ""))
    return ("Model groups: `llm_query`, `llm_query_batched`, `rlm_query` and `rlm_query_batched` take "
            f"`model=` naming one of {', '.join(names)}; without it a default is chosen for you. "
            "A prompt too big for every group is refused: split it.")
