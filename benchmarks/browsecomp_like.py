"""browsecomp-plus-like: multi-hop questions over a synthetic corpus of fictional entities (formerly ``multihop``).

How it is built: a seeded world of fictional cities, people, companies and
novels; every entity gets one document (a title line and its facts as prose
sentences, shuffled among filler sentences). A question follows a chain of 1-3
relations (``founder``, ``headquarters``, ``birthplace``, ``employer``,
``author``) from a named start (or from "the novel that won the {prize} in
{year}") and asks one attribute at the end (a river, a country, a year, a
profession), so answering needs 2-4 documents (``meta["hops"]``). The answer
is one short exact string. Hard distractors: every entity on the chain has a
*twin* with a near-identical name (``Elena Varga`` / ``Elena Vargas``) whose
relations point at the twins of the next entities, and prize questions get
decoy novels (same prize in a neighbouring year, another prize in the same
year). The corpus is padded with unrelated entities up to the target length.
The context is a list of ``{"path", "text"}`` documents.

Scoring: BrowseComp-Plus grades answers with an LLM judge (BrowseComp's grader:
the judge extracts the final answer from the reply and says whether it matches the
correct answer). With ``--judge-model`` set, the runner does the same
(:mod:`rlm.benchmarks.judge`, ``meta["grading"] == "judge"``) and keeps the code
match below as a second column; without a judge, the score is the code match:
normalised exact match, and a longer reply also counts when it contains the gold
answer and none of the distractor answers (``meta["distractors"]``: what the twin
chains lead to). BrowseComp-Plus retrieves from a fixed web corpus of real pages;
here the corpus is made up, so no model can know the answer from training -- which
is also why this suite is ``-like`` and kept out of paper comparisons.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rlm.benchmarks.scoring import short_answer_match
from rlm.benchmarks.tasks import CHARS_PER_TOKEN, Task

NAME = "browsecomp-plus-like"
DEFAULT_LENGTHS = [2 ** k for k in range(13, 18)]

_SYL = ("al bar cen dor el fen gar hal is jor kel lor mar nor or pel quin ros sel tor ul var wen yor zel "
        "ba ce di fo gu ha ki lo mu ne ri sa te vo").split()
_GIVEN = ("Elena Tomas Ines Rafael Mirela Oskar Lidia Anton Greta Matteo Sabine Viktor Alma Dario Noemi "
          "Pavel Irena Lucan Tessa Bruno").split()
PROFESSIONS = ("cartographer", "glassblower", "astronomer", "luthier", "botanist", "archivist", "shipwright",
               "violinist", "engineer", "translator", "sculptor", "geologist")
PRIZES = ("Veltmar Prize", "Orsen Medal", "Calder Award", "Hollin Prize", "Strand Laurel")
_COMPANY_SUFFIX = ("Systems", "Works", "Holdings", "Instruments", "Foundry", "Labs")
_TWIN_SUFFIX = {"Systems": "Systematics", "Works": "Workshop", "Holdings": "Holding", "Instruments": "Instrumentation",
                "Foundry": "Foundries", "Labs": "Laboratories"}
_FILLER = ("It is often mentioned in regional guidebooks.", "Local archives hold several letters about it.",
           "Opinions about it differ among historians.", "A short documentary covered it some years ago.",
           "Visitors tend to remember it for its unusual name.", "Little else is recorded in the public sources.",
           "Several newspapers have written about it since.", "It appears in a number of school textbooks.")

#: Relation -> (source kind, target kind, phrase with {x}).
RELATIONS = {
    "founder": ("company", "person", "the founder of {x}"),
    "headquarters": ("company", "city", "the city where {x} has its headquarters"),
    "birthplace": ("person", "city", "the city where {x} was born"),
    "employer": ("person", "company", "the company that employs {x}"),
    "author": ("book", "person", "the author of {x}"),
}
#: Attribute -> (entity kind, question with {x}).
ATTRIBUTES = {
    "river": ("city", "Which river flows through {x}?"),
    "country": ("city", "In which country is {x}?"),
    "birth_year": ("person", "In what year was {x} born?"),
    "profession": ("person", "What is the profession of {x}?"),
    "founded_year": ("company", "In what year was {x} founded?"),
}


@dataclass
class Entity:
    """One fictional entity: its kind, name, relations (names of other entities) and attributes."""

    kind: str
    name: str
    links: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    twin_of: str | None = None


class World:
    """All entities by name, with a name generator that never repeats a name."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.entities: dict[str, Entity] = {}
        self.prize_years: set[tuple[str, str]] = set()
        self.by_kind: dict[str, list[str]] = {"city": [], "person": [], "company": [], "book": []}

    def _fresh(self, make: Any) -> str:
        while True:
            name = make()
            if name not in self.entities:
                return name

    def _word(self, parts: int) -> str:
        return "".join(self.rng.choice(_SYL) for _ in range(parts)).capitalize()

    def add(self, kind: str, name: str | None = None) -> Entity:
        rng = self.rng
        makers = {"city": lambda: self._word(3), "person": lambda: f"{rng.choice(_GIVEN)} {self._word(2)}",
                  "company": lambda: f"{self._word(2)} {rng.choice(_COMPANY_SUFFIX)}",
                  "book": lambda: f"The {self._word(2)} {rng.choice(('Letters', 'Orchard', 'Voyage', 'Winter'))}"}
        entity = Entity(kind, name or self._fresh(makers[kind]))
        entity.attrs = self._attributes(kind)
        self.entities[entity.name] = entity
        if name is None:  # twins (named by the caller) are never picked as link targets
            self.by_kind[kind].append(entity.name)
        return entity

    def _attributes(self, kind: str) -> dict[str, str]:
        rng = self.rng
        if kind == "city":
            return {"river": f"{self._word(2)} River", "country": f"{self._word(2)}ia",
                    "founded_year": str(rng.randint(900, 1800))}
        if kind == "person":
            return {"birth_year": str(rng.randint(1900, 1995)), "profession": rng.choice(PROFESSIONS)}
        if kind == "company":
            return {"founded_year": str(rng.randint(1850, 2015))}
        prize_year = self._prize_year()
        return {"prize": prize_year[0], "prize_year": prize_year[1]} if prize_year else {}

    def _prize_year(self) -> tuple[str, str] | None:
        """A (prize, year) no other novel won; None once they run short (large corpora)."""
        for _ in range(20):
            key = (self.rng.choice(PRIZES), str(self.rng.randint(1900, 2024)))
            if key not in self.prize_years:
                self.prize_years.add(key)
                return key
        return None

    def pick(self, kind: str) -> Entity:
        """A random existing entity of ``kind`` (a new one if there is none)."""
        names = self.by_kind[kind]
        return self.entities[self.rng.choice(names)] if names else self.add(kind)

    def link(self, entity: Entity) -> None:
        """Give ``entity`` its missing relations, pointing at random entities of the right kind."""
        for relation, (source, target, _) in RELATIONS.items():
            if entity.kind == source and relation not in entity.links:
                entity.links[relation] = self.pick(target).name

    def link_all(self) -> None:
        for entity in list(self.entities.values()):
            self.link(entity)

    def twin_name(self, entity: Entity) -> str:
        """A near-identical name for ``entity``'s twin."""
        name = entity.name
        if entity.kind == "company":
            head, suffix = name.rsplit(" ", 1)
            candidate = f"{head} {_TWIN_SUFFIX[suffix]}"
        elif entity.kind == "person":
            candidate = name + ("s" if not name.endswith("s") else "e")
        elif entity.kind == "book":
            candidate = name.replace("The ", "A ", 1)
        else:
            candidate = name[:-1] + name[-1] * 2
        if candidate not in self.entities:
            return candidate
        return self._fresh(lambda: name + self._word(1).lower())


def _walk(world: World, hops: int) -> tuple[Entity, list[str], str] | None:
    """A start entity, ``hops - 1`` relations and a final attribute, or None on a dead end."""
    rng = world.rng
    start = world.pick(rng.choice(("company", "person", "book")))
    entity, relations = start, []
    for _ in range(hops - 1):
        options = sorted(r for r, (source, _, _) in RELATIONS.items() if source == entity.kind)
        if not options:
            return None
        relation = rng.choice(options)
        relations.append(relation)
        entity = world.entities[entity.links[relation]]
    attributes = sorted(a for a, (kind, _) in ATTRIBUTES.items() if kind == entity.kind)
    if not attributes:
        return None
    return start, relations, rng.choice(attributes)


def _follow(world: World, name: str, relations: list[str]) -> Entity:
    entity = world.entities[name]
    for relation in relations:
        entity = world.entities[entity.links[relation]]
    return entity


def _add_twins(world: World, chain: list[Entity]) -> None:
    """A twin for every chain entity; each twin links to the next entity's twin."""
    twins: list[Entity] = []
    for entity in chain:
        twin = world.add(entity.kind, world.twin_name(entity))
        twin.twin_of = entity.name
        twins.append(twin)
    for i, (entity, twin) in enumerate(zip(chain, twins, strict=True)):
        for relation, (source, _, _) in RELATIONS.items():
            if entity.kind == source:
                twin.links[relation] = world.pick(RELATIONS[relation][1]).name
        if i + 1 < len(chain):
            relation = next(r for r, target in entity.links.items() if target == chain[i + 1].name)
            twin.links[relation] = twins[i + 1].name


def _add_prize_decoys(world: World, book: Entity) -> None:
    """Same prize in a neighbouring year; another prize in the same year."""
    prize, year = book.attrs["prize"], book.attrs["prize_year"]
    for decoy_prize, decoy_year in ((prize, str(int(year) + 1)), (prize, str(int(year) - 1)),
                                    (next(p for p in PRIZES if p != prize), year)):
        if (decoy_prize, decoy_year) in world.prize_years:
            continue
        world.prize_years.add((decoy_prize, decoy_year))
        decoy = world.add("book")
        if decoy.attrs:
            world.prize_years.discard((decoy.attrs["prize"], decoy.attrs["prize_year"]))
        decoy.attrs.update(prize=decoy_prize, prize_year=decoy_year)
        decoy.links["author"] = world.pick("person").name


def _start_phrase(start: Entity, by_prize: bool) -> str:
    if start.kind == "book":
        if by_prize:
            return f"the novel that won the {start.attrs['prize']} in {start.attrs['prize_year']}"
        return f"the novel {start.name}"
    return start.name


def question_for(start: Entity, relations: list[str], attribute: str, by_prize: bool) -> str:
    phrase = _start_phrase(start, by_prize)
    for relation in relations:
        phrase = RELATIONS[relation][2].format(x=phrase)
    return ATTRIBUTES[attribute][1].format(x=phrase)


_FACTS = {
    "founder": "{name} was founded by {value}.", "headquarters": "{name} has its headquarters in {value}.",
    "birthplace": "{name} was born in {value}.", "employer": "{name} works for {value}.",
    "author": "{name} is a novel written by {value}.", "river": "The {value} flows through {name}.",
    "country": "{name} is a city in {value}.", "founded_year": "{name} was founded in {value}.",
    "birth_year": "{name} was born in the year {value}.", "profession": "{name}'s profession is {value}.",
}


def document(entity: Entity, rng: random.Random) -> str:
    """The entity's page: title line, then its facts shuffled among filler sentences."""
    sentences = [_FACTS[r].format(name=entity.name, value=v) for r, v in entity.links.items()]
    attrs = dict(entity.attrs)
    if "prize" in attrs:
        sentences.append(f"{entity.name} won the {attrs.pop('prize')} in {attrs.pop('prize_year')}.")
    sentences += [_FACTS[a].format(name=entity.name, value=v) for a, v in attrs.items()]
    sentences += rng.sample(_FILLER, k=rng.randint(2, 4))
    rng.shuffle(sentences)
    return f"{entity.name}\n\n{' '.join(sentences)}\n"


_HEADER = len("=== doc-00000.txt ===\n")  # what context_text adds per document


def _corpus(world: World, keep: set[str], chars: int, rng: random.Random) -> list[dict[str, str]]:
    """Documents for every entity, padded or trimmed (never dropping ``keep``) to about ``chars``."""
    pages = {name: document(entity, rng) for name, entity in world.entities.items()}
    total = sum(map(len, pages.values())) + _HEADER * len(pages)
    while total < chars:
        entity = world.add(rng.choice(("city", "person", "company", "book")))
        world.link(entity)
        pages[entity.name] = document(entity, rng)
        total += len(pages[entity.name]) + _HEADER
    optional = sorted(set(pages) - keep)
    rng.shuffle(optional)
    while total > chars and optional:
        total -= len(pages.pop(optional.pop())) + _HEADER
    names = sorted(pages)
    rng.shuffle(names)
    return [{"path": f"doc-{i:05d}.txt", "text": pages[name]} for i, name in enumerate(names)]


def make_task(index: int, length_tokens: int, rng: random.Random) -> Task:
    hops = 2 + index % 3
    world = World(rng)
    for kind in ("city", "person", "company", "book"):
        for _ in range(max(2, length_tokens * CHARS_PER_TOKEN // 300 // 4)):
            world.add(kind)
    world.link_all()
    walk = None
    while walk is None:
        walk = _walk(world, hops)
    start, relations, attribute = walk
    chain = [start] + [_follow(world, start.name, relations[: i + 1]) for i in range(len(relations))]
    _add_twins(world, chain)
    by_prize = "prize" in start.attrs and rng.random() < 0.5
    if by_prize:
        _add_prize_decoys(world, start)
    world.link_all()
    gold = chain[-1].attrs[attribute]
    twins = [(e, world.entities[e.twin_of]) for e in world.entities.values() if e.twin_of]
    distractors = sorted({_follow(world, t.name, relations[chain.index(original):]).attrs[attribute]
                          for t, original in twins if original in chain} - {gold})
    keep = {e.name for e in chain} | {t.name for t, _ in twins} | {
        e.name for e in world.entities.values() if e.kind == "book" and by_prize
        and e.attrs.get("prize_year") in {str(int(start.attrs["prize_year"]) + d) for d in (-1, 0, 1)}}
    docs = _corpus(world, keep, length_tokens * CHARS_PER_TOKEN, rng)
    question = question_for(start, relations, attribute, by_prize) + " Answer with the exact short answer only."
    return Task(id=f"{NAME}-{length_tokens}-{index}", suite=NAME, question=question, answer=gold, context=docs,
                length_tokens=length_tokens,
                meta={"hops": hops, "start": start.name, "relations": relations, "attribute": attribute,
                      "by_prize": by_prize, "chain": [e.name for e in chain], "distractors": distractors,
                      "grading": "judge"})


def generate(n: int, lengths: list[int], seed: int) -> list[Task]:
    """Task ``i`` needs ``2 + i % 3`` documents."""
    return [make_task(i, length, random.Random(f"{NAME}/{seed}/{length}/{i}"))
            for length in lengths for i in range(n)]


def score(task: Task, prediction: str | None) -> float:
    """The code match (the runner uses a judge model instead when one is configured)."""
    return short_answer_match(prediction, str(task.answer), task.meta.get("distractors", ()))
