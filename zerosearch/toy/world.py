"""A synthetic world small enough to learn on two CPU cores: invented countries, short documents of one
fact each, and questions whose answers are only in the documents.

Each country has a capital, a founding year, a river, a language and a neighbour (another country); the
corpus holds one document per fact ("The capital of Vezede is Pethivo."), titled with the country, as a
search index holds passages. Questions ask for one attribute (single-hop: search "capital of Vezede",
read, answer) or for an attribute of the neighbour (two-hop: search "neighbour of Vezede", read the
neighbour's name, search "capital of <it>", answer). Countries are split into disjoint sets for SFT
demonstrations, RL questions and held-out test questions, so a test question can only be answered by
searching.

Why it is built this way (../shared/TOY_WORLD_NOTES.md and our own measurements): a tiny model copies an
answer out of a document far more reliably when names are made of many distinct syllables; thousands of
entities make memorising facts impossible, so the model must learn to copy; and one fact per document
keeps every sequence short and concentrates the simulator's training signal on copying the answer (with
five random names per document, a 0.5 M simulator wrote the answer into 3.5% of its useful documents after
1200 SFT steps).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th")
_VOWELS = ("a", "e", "i", "o")
# 64 syllables, as the probe used
SYLLABLES = tuple(o + v for o in _ONSETS for v in _VOWELS)
ATTRIBUTES = ("capital", "year", "river", "language")

# the word a document and a query use for each fact
FACT_WORD = {"capital": "capital", "year": "founding year", "river": "river", "language": "language",
             "neighbor": "neighbour"}

# question templates per attribute; {e} is the country the question names
QUESTIONS = {
    "capital": "What is the capital of {e}?",
    "year": "In which year was {e} founded?",
    "river": "Which river flows through {e}?",
    "language": "What language is spoken in {e}?",
}
TWO_HOP = {
    "capital": "What is the capital of the country that borders {e}?",
    "language": "What language is spoken in the country that borders {e}?",
}


def query_for(attribute: str, entity: str) -> str:
    """The search query a demonstration issues for a fact, e.g. "capital of Vezede"."""
    return f"{FACT_WORD[attribute]} of {entity}"


@dataclass
class Country:
    name: str
    capital: str
    year: str
    river: str
    language: str
    neighbor: str = ""

    def fact(self, attribute: str) -> str:
        return f"The {FACT_WORD[attribute]} of {self.name} is {getattr(self, attribute)}."

    def documents(self) -> list[str]:
        """One document per fact, title on the first line (the {id, contents} corpus layout)."""
        return [f'"{self.name}"\n{self.fact(a)}' for a in (*ATTRIBUTES, "neighbor")]


@dataclass
class Question:
    id: str
    question: str
    golden_answers: list[str]
    entity: str  # the country the question names (searched first)
    attribute: str
    query: str  # the first search a demonstration issues
    hops: int = 1
    bridge: str = ""  # for two-hop: the neighbour whose attribute is asked


@dataclass
class World:
    """Countries split into sft / rl / test sets, with questions for each split."""

    countries: dict[str, Country]
    splits: dict[str, list[str]]  # split -> country names
    questions: dict[str, list[Question]] = field(default_factory=dict)

    def corpus(self) -> Iterator[dict[str, str]]:
        """The world's corpus as {id, contents} rows."""
        i = 0
        for c in self.countries.values():
            for doc in c.documents():
                yield {"id": str(i), "contents": doc}
                i += 1

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write corpus.jsonl and <split>.jsonl (the shared/data/qa layout, plus the fields above)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"corpus": out / "corpus.jsonl"}
        with open(paths["corpus"], "w") as f:
            for row in self.corpus():
                f.write(json.dumps(row) + "\n")
        for split, qs in self.questions.items():
            paths[split] = out / f"{split}.jsonl"
            with open(paths[split], "w") as f:
                for q in qs:
                    row = asdict(q)
                    row["source"] = "toy"
                    f.write(json.dumps(row) + "\n")
        (out / "countries.json").write_text(json.dumps({n: asdict(c) for n, c in self.countries.items()}))
        (out / "splits.json").write_text(json.dumps(self.splits))
        return paths


class _Names:
    """Unique invented names from the syllable inventory."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def make(self, n_syllables: int, suffix: str = "", unique: bool = True) -> str:
        for _ in range(1000):
            name = "".join(self.rng.choice(SYLLABLES) for _ in range(n_syllables)).capitalize() + suffix
            if not unique:
                return name
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("ran out of names: raise the syllable count")


def build_world(n_sft: int = 3000, n_rl: int = 1000, n_test: int = 150, two_hop_share: float = 0.2,
                questions_per_test_country: int = 3, seed: int = 0) -> World:
    """Generate countries and questions.

    Args:
        n_sft, n_rl, n_test: countries per split (disjoint; neighbours stay inside a split so two-hop
            questions never leak a test fact into training).
        two_hop_share: share of two-hop questions in the rl and test splits.
        questions_per_test_country: test questions per test country (distinct attributes).
        seed: everything is determined by it.
    """
    rng = random.Random(seed)
    names = _Names(rng)
    countries: dict[str, Country] = {}
    splits: dict[str, list[str]] = {}
    for split, n in (("sft", n_sft), ("rl", n_rl), ("test", n_test)):
        members = []
        for _ in range(n):
            # unique names need 3 syllables (64^2 two-syllable names would run out); languages may repeat
            c = Country(name=names.make(3), capital=names.make(3), year=str(rng.randint(1000, 1999)),
                        river=names.make(3), language=names.make(2, "ish", unique=False))
            countries[c.name] = c
            members.append(c.name)
        for i, name in enumerate(members):  # a ring inside the split: everyone has a neighbour
            countries[name].neighbor = members[(i + 1) % len(members)]
        splits[split] = members

    def questions(split: str, per_country: int) -> list[Question]:
        qs = []
        for name in splits[split]:
            c = countries[name]
            for k, attr in enumerate(rng.sample(ATTRIBUTES, per_country)):  # distinct: no repeated question
                if split != "sft" and attr in TWO_HOP and rng.random() < two_hop_share * len(ATTRIBUTES) / len(TWO_HOP):
                    other = countries[c.neighbor]
                    qs.append(Question(f"{split}-{name}-{k}", TWO_HOP[attr].format(e=name), [getattr(other, attr)],
                                       name, attr, query_for("neighbor", name), hops=2, bridge=other.name))
                else:
                    qs.append(Question(f"{split}-{name}-{k}", QUESTIONS[attr].format(e=name), [getattr(c, attr)],
                                       name, attr, query_for(attr, name)))
        return qs

    world = World(countries, splits)
    world.questions = {"sft": questions("sft", 1), "rl": questions("rl", 1),
                       "test": questions("test", questions_per_test_country)}
    return world
