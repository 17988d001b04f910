"""A synthetic world small enough to learn on two CPU cores: invented countries, their documents and
questions whose answers are only in the documents.

Each country has a capital, a founder, a founding year, a river, a language and a neighbour (another
country). Its document states them; questions ask for one attribute (single-hop) or for an attribute of
the neighbour (two-hop: search the country, read its neighbour, search the neighbour). Countries are split
into disjoint sets for SFT demonstrations, RL questions and held-out test questions, so a test question
can only be answered by searching.

Why names are built this way (../shared/TOY_WORLD_NOTES.md): a tiny model copies an answer out of a
document far more reliably when names are made of many distinct syllables and do not repeat inside a
document; and thousands of entities make memorising facts impossible, so the model must learn to copy.
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
ATTRIBUTES = ("capital", "founder", "year", "river", "language")

# question templates per attribute; {e} is the entity (or for two-hop, the country the question names)
QUESTIONS = {
    "capital": "What is the capital of {e}?",
    "founder": "Who founded {e}?",
    "year": "In which year was {e} founded?",
    "river": "Which river flows through {e}?",
    "language": "What language is spoken in {e}?",
}
TWO_HOP = {
    "capital": "What is the capital of the country that borders {e}?",
    "language": "What language is spoken in the country that borders {e}?",
}


@dataclass
class Country:
    name: str
    capital: str
    founder: str
    year: str
    river: str
    language: str
    neighbor: str = ""

    def document(self) -> str:
        """The country's one document (title on the first line, as the {id, contents} corpus layout)."""
        return (f'"{self.name}"\n{self.name} is a country with the capital {self.capital}. {self.name} was founded by '
                f"{self.founder} in {self.year}. The river {self.river} flows through it and its people speak "
                f"{self.language}. It borders {self.neighbor}.")


@dataclass
class Question:
    id: str
    question: str
    golden_answers: list[str]
    entity: str  # the country to search first
    attribute: str
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
        for i, c in enumerate(self.countries.values()):
            yield {"id": str(i), "contents": c.document()}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write corpus.jsonl and <split>.jsonl (the shared/data/qa layout) into out_dir."""
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
                    f.write(json.dumps({"id": q.id, "question": q.question, "golden_answers": q.golden_answers,
                                        "source": "toy", "entity": q.entity, "attribute": q.attribute, "hops": q.hops,
                                        "bridge": q.bridge}) + "\n")
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
        questions_per_test_country: test questions drawn per test country.
        seed: everything is determined by it.
    """
    rng = random.Random(seed)
    names = _Names(rng)
    countries: dict[str, Country] = {}
    splits: dict[str, list[str]] = {}
    for split, n in (("sft", n_sft), ("rl", n_rl), ("test", n_test)):
        members = []
        for _ in range(n):
            # unique names need 3 syllables (64^2 two-syllable names would run out); given names may repeat
            c = Country(name=names.make(3), capital=names.make(3),
                        founder=f"{names.make(2, unique=False)} {names.make(3)}", year=str(rng.randint(1000, 1999)),
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
            # distinct attributes per country, so no question repeats
            for k, attr in enumerate(rng.sample(ATTRIBUTES, per_country)):
                if split != "sft" and attr in TWO_HOP and rng.random() < two_hop_share * len(ATTRIBUTES) / len(TWO_HOP):
                    other = countries[c.neighbor]
                    qs.append(Question(f"{split}-{name}-{k}", TWO_HOP[attr].format(e=name), [getattr(other, attr)],
                                       name, attr, hops=2, bridge=other.name))
                else:
                    qs.append(Question(f"{split}-{name}-{k}", QUESTIONS[attr].format(e=name), [getattr(c, attr)],
                                       name, attr))
        return qs

    world = World(countries, splits)
    world.questions = {"sft": questions("sft", 1), "rl": questions("rl", 1),
                       "test": questions("test", questions_per_test_country)}
    return world
