"""A seeded synthetic encyclopedia and a BEIR-style retrieval set drawn from the same world.

The default grid must run offline on a fresh machine, so it makes its own data here: no downloads,
a few seconds, byte-identical output for a given seed.

The generator
-------------
1. **World.** ``n_articles + n_corpus_articles`` entities of four kinds (person 40%, place 30%,
   organisation 20%, species 10%), each with an invented, unique name made of random syllables, a
   fictional country, a subtype (composer, port, academy, warbler, ...) and a few "topic" words
   of its domain (a chemist keeps returning to "salts" and "distillation"). Entities are split
   into two *disjoint groups*: the first ``n_articles`` entities are the pre-training group, the
   rest the retrieval group. Every reference to another entity (a teacher, a founder, a twin town)
   is drawn from the entity's own group (the other group only when a tiny group lacks that kind),
   so the retrieval set is *held out*: none of its names occurs in the pre-training corpus; and
   inside a group names recur across articles (a person's name appears in the articles of the town
   they founded and of their pupils: natural distractors).
2. **Facts.** Each kind has six relations (a person: teacher, school, moved-to, best-known work,
   award, place of death; a place: founder, twin town, river, landmark, industry, population; ...),
   each with a value (another entity's name, a vocabulary item or a number), a year where it
   makes sense, several statement templates and several query templates that paraphrase them.
   Each relation is stated at most once per article (15% are left out, for variety).
3. **Articles.** A lead paragraph that names the entity ("Orvald Kesh (1788-1851) was a Vestorian
   composer. ..."), then three sections with a heading line of their own ("Early life.", as in
   ``wikimedia/wikipedia``), each one paragraph holding two relations of that section plus 1-2
   domain filler sentences (never repeated within an article), in random order. Outside the lead
   the entity is *never named*: the first sentence of a section calls it by description ("The
   composer") or pronoun, the rest by pronoun, and fillers reuse the entity's topic words, so
   consecutive chunks of an article are coherent (what EBAR learns) but a section read alone does
   not say whom it is about.
4. **Pre-training corpus.** The pre-training group's articles, written as a parquet with the
   ``wikimedia/wikipedia`` columns ``id, url, title, text`` so :mod:`llara.wiki` reads it unchanged.
5. **Retrieval set (BEIR layout).** Every paragraph (lead and sections) of the retrieval group's
   articles is one document ``{"_id", "title": article title, "text": paragraph}``. Queries are
   made from section paragraphs only: one relation of a chosen paragraph, asked with a query
   template that names the entity ("Under whom did Orvald Kesh study?"). The relevant document
   (binary qrels, score 1, one per query) states the answer but mentions the entity only through
   its title and pronouns, so a retriever must combine the title with the passage; plain lexical
   overlap mostly finds the entity's lead paragraph instead (a TF-IDF ranking reaches an NDCG@10
   around 0.5, see ``tests/test_synthetic.py``). A paragraph serves at most one query, and the
   train/test split is a seeded shuffle of the queries, so the judged documents of the two splits
   are disjoint. The answer and the relation are kept in each query's ``metadata``.
6. **Fine-tuning set about the pre-training group** (``--pretrain-beir-out``, optional). The same
   construction over the *pre-training* group's articles, from its own random stream, with a train
   split only (``--n-pretrain-queries``): the role MS MARCO plays for BEIR in the paper. None of its
   entities occurs in the retrieval set, and writing it changes no document, query or qrel of the
   retrieval set (only the recorded arguments in its synthetic.json). A
   retriever fine-tuned on the 200 train queries of the retrieval set memorises them (NDCG@10 at
   most about 0.28 on the test split); thousands of queries about other entities teach it to match
   a name in the query with the title of a passage (README, "which knobs mattered").

Nothing here knows about the adaptation variants (EBAE, EBAR, joint, none): the templates, the
proportions and the sizes were fixed before any run of the grid and are not tuned on its results.

CLI::

    python -m llara.synthetic --seed 0 --articles-out resources/synthetic/wiki.parquet \\
        --beir-out resources/synthetic/beir [--n-articles 1500 --n-corpus-articles 250 \\
        --n-train-queries 200 --n-test-queries 100] \\
        [--pretrain-beir-out resources/synthetic/pretrain-beir --n-pretrain-queries 3000]
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llara.io import DataError, atomic_folder, atomic_path, atomic_write_json, cli_main, write_config

# ---------------------------------------------------------------------------------------------
# Vocabulary. Template slots: {S}/{s} the subject (description or pronoun), {D}/{d} the
# description ("the composer"), {P}/{p} the possessive, {v} the relation's value, {y} its year,
# {name} the entity's name (leads and queries only), {t0} {t1} {t2} the entity's topic words,
# {town} {person} another entity of the group, {adj} {year2} {country} fillers.
# ---------------------------------------------------------------------------------------------

# fmt: off
KINDS = ("person",) * 4 + ("place",) * 3 + ("organisation",) * 2 + ("species",)  # proportions
ONSETS = "b br c d dr f g gr h k kr l m n p pr r s st t tr v w z".split()
VOWELS = "a e i o u a e o ae ei ou".split()
CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "v"]
GIVEN = {"he": "Orvald Tomas Corin Benedek Lazlo Ruben Emeric Jorin".split(),
         "she": "Mira Elsa Ilse Anouk Petra Sabine Talia Vera".split()}
ADJ = "quiet bold strange careful broad bright early modest vivid plain sombre lively".split()
PLACE_SUFFIX = ["by", "holm", "ford", "stad", "mouth", "ton", "wick", "vale", ""]

PERSON_DOMAINS: dict[str, dict[str, list[str]]] = {
    "music": {
        "jobs": ["composer", "violinist", "conductor", "organist"],
        "topics": ["sonatas", "church music", "string quartets", "folk songs", "opera", "counterpoint"],
        "works": ["Sonata", "Mass", "Quartet", "Symphony", "Requiem"],
        "fillers": [
            "{S} composed {t0} for small ensembles.",
            "Critics praised the {adj} harmonies of {p} {t1}.",
            "{P} concerts in {town} drew large audiences.",
            "{S} often returned to {t0} in {p} letters.",
            "A {adj} performance of {p} {t1} took place in {year2}.",
            "{S} gave lessons in {t2} to {person}.",
            "Few of {p} manuscripts on {t1} survive.",
            "{S} played at a chapel in {town} for some years.",
        ],
    },
    "science": {
        "jobs": ["chemist", "astronomer", "botanist", "physician", "geologist"],
        "topics": ["salts", "distillation", "comets", "mosses", "fevers", "river sediments"],
        "works": ["Treatise", "Atlas", "Handbook", "Catalogue"],
        "fillers": [
            "{S} published a {adj} study of {t0}.",
            "{P} experiments on {t1} were repeated across {country}.",
            "{S} kept detailed notebooks on {t0}.",
            "{P} lectures on {t1} were attended by {person}.",
            "{S} corresponded for years with colleagues about {t2}.",
            "A laboratory in {town} still holds {p} instruments.",
            "{P} early results on {t0} were disputed.",
            "{S} travelled widely to collect samples of {t1}.",
        ],
    },
    "art": {
        "jobs": ["painter", "sculptor", "engraver", "architect"],
        "topics": ["portraits", "harbour scenes", "bronze figures", "chapels", "landscapes", "altarpieces"],
        "works": ["Triptych", "Frieze", "Portrait", "Fountain"],
        "fillers": [
            "{S} produced a series of {adj} {t0}.",
            "{P} {t1} hang in the town hall of {town}.",
            "{S} worked slowly and destroyed many early {t0}.",
            "An exhibition of {p} {t1} opened in {year2}.",
            "{S} taught drawing to {person} for a short time.",
            "{P} studio was full of unfinished {t2}.",
            "Collectors in {country} paid high prices for {p} {t0}.",
            "{S} signed few of {p} {t1}.",
        ],
    },
    "letters": {
        "jobs": ["poet", "novelist", "playwright", "historian"],
        "topics": ["sea voyages", "village life", "old wars", "love letters", "court intrigue", "exile"],
        "works": ["Chronicle", "Ballads", "Letters", "Comedy"],
        "fillers": [
            "{S} wrote at length about {t0}.",
            "{P} {adj} account of {t1} sold well.",
            "Readers in {town} admired {p} stories of {t0}.",
            "{S} revised {p} early work on {t1} many times.",
            "A collection of {p} writings on {t2} appeared in {year2}.",
            "{S} read aloud from {p} pages on {t0} in the cafes of {town}.",
            "{P} friendship with {person} is recorded in many letters.",
            "Some critics found {p} treatment of {t1} too {adj}.",
        ],
    },
    "politics": {
        "jobs": ["governor", "diplomat", "magistrate", "reformer"],
        "topics": ["tax reform", "harbour law", "road building", "schools for the poor", "trade treaties"],
        "works": ["Charter", "Memoir", "Address", "Code"],
        "fillers": [
            "{S} argued for {t0} throughout {p} career.",
            "{P} speeches on {t1} were printed in {town}.",
            "{S} negotiated with {person} over {t0}.",
            "{P} {adj} plans for {t1} were only partly carried out.",
            "{S} made many enemies over {t2}.",
            "A statue of {d} stands in the square of {town}.",
            "{S} served on a commission on {t0} in {year2}.",
            "Newspapers in {country} followed {p} views on {t1} closely.",
        ],
    },
}
PLACE = {
    "types": ["town", "village", "port", "market town", "city"],
    "topics": ["spring fair", "harvest festival", "stone houses", "timber houses", "apple orchards", "vineyards",
               "horse market", "wooden churches"],
    "fillers": [
        "{S} is proud of its {t0}.",
        "The old quarter of {d} is known for its {t1}.",
        "Travellers pass through {d} on the road to {town}.",
        "Much of {d} was rebuilt after a fire in {year2}.",
        "A new school opened in {d} in {year2}.",
        "{S} has a small museum devoted to its {t2}.",
        "A railway line reached {d} in {year2}.",
        "The painter {person} lived in {d} for a summer.",
    ],
    "industries": ["salt mining", "wool weaving", "fishing", "shipbuilding", "cheese making", "copper mining",
                   "glass blowing", "brewing"],
    "buildings": ["Tower", "Bridge", "Cathedral", "Mill", "Fortress", "Lighthouse", "Market Hall"],
}
ORGANISATION = {
    "types": {  # subtype -> its fields of activity
        "company": ["the manufacture of glassware", "steam engines", "printed maps", "clocks", "wool cloth"],
        "academy": ["the teaching of navigation", "training physicians", "the study of law", "instruction in painting"],
        "society": ["the preservation of old manuscripts", "the study of local birds", "a public library"],
        "bank": ["loans to farmers", "shipping insurance", "savings accounts for workers"],
    },
    "topics": ["annual reports", "a large archive", "public lectures", "apprentices", "branch offices"],
    "fillers": [
        "{S} publishes {t0} that are widely read.",
        "{P} building in {town} dates from {year2}.",
        "{S} takes a {adj} approach to {t1}.",
        "Over the years {d} has relied on {t1}.",
        "{S} once shared offices with a firm owned by {person}.",
        "{P} records go back to {year2}.",
        "Critics say that {d} spends too much on {t2}.",
        "{S} sends delegates to a yearly meeting in {town}.",
    ],
}
SPECIES = {
    "groups": {  # subtype -> (group, length range in cm, diets)
        "warbler": ("bird", (9, 16), ["small insects", "seeds", "berries"]),
        "finch": ("bird", (11, 19), ["seeds", "buds", "berries"]),
        "beetle": ("beetle", (1, 5), ["decaying wood", "pollen", "willow leaves"]),
        "moth": ("moth", (2, 7), ["nectar", "lichens", "oak leaves"]),
        "trout": ("fish", (20, 60), ["insect larvae", "freshwater snails", "small fish"]),
        "newt": ("amphibian", (8, 18), ["worms", "insect larvae", "spiders"]),
        "bat": ("mammal", (4, 9), ["moths", "midges", "beetles"]),
    },
    "habitats": ["reed marshes", "pine forests", "coastal dunes", "mountain valleys", "chalk grassland", "river meadows"],
    "colours": ["rust-red", "pale green", "ash-grey", "golden", "dark brown", "blue-black"],
    "statuses": ["endangered", "vulnerable", "near threatened", "of least concern"],
    "topics": ["early spring", "late summer", "autumn", "wet weather", "warm weather", "the early morning"],
    "fillers": [
        "{S} is most active in {t0}.",
        "Sightings of {d} are most common in {t1}.",
        "Numbers of {d} fall sharply in {t2}.",
        "{S} was drawn by {person} for a field guide.",
        "{S} is rarely seen near {town}.",
        "{S} is hard to tell apart from its close relatives.",
        "Observers in {country} count {d} each year.",
        "{S} was once common around {town}.",
    ],
}
LEADS = {
    "person": ["{name} ({born}-{died}) was a {nat} {job}.", "{name} ({born}-{died}) was {a_job} from {country}."],
    "place": ["{name} is a {job} in the {region} region of {country}.", "{name} is a {nat} {job} in the {region} region."],
    "organisation": ["The {name} is a {nat} {job}.", "The {name} is {a_job} in {country}."],
    "species": ["The {name} ({sci}) is a species of {group} native to {country}.",
                "The {name} ({sci}) is {a_group} found in {country}."],
}
LEAD_FILLERS = [
    "{S} is often mentioned in accounts of {country}.",
    "{S} is closely associated with {t0}.",
    "Much of what is known about {d} comes from old records.",
    "{S} is the subject of a short study by {person}.",
]

# relation | value kind (see _value) | statements, "/"-separated | queries, "/"-separated
_RELATIONS = """
teacher | person | {S} studied under {v} for several years. / {S} became a pupil of {v}. / {S} was trained by {v}, who shaped {p} early style. | Who was the teacher of {name}? / Under whom did {name} study? / Which master trained {name}?
school | academy | {S} attended the {v}. / {S} was educated at the {v}. / {S} enrolled at the {v} at an early age. | Where was {name} educated? / Which institution did {name} attend? / At which school did {name} learn the craft?
moved | place | In {y} {s} moved to {v}. / {S} settled in {v} in {y}. / {S} relocated to {v} in {y} and stayed for a decade. | Which town did {name} move to? / Where did {name} settle? / To which place did {name} relocate?
work | work | {S} is best remembered for {v}. / {P} most celebrated work is {v}. / {S} gained wide fame with {v}. | What is {name} best known for? / Which work made {name} famous? / What is the most celebrated work of {name}?
award | award | In {y} {s} received the {v}. / {S} was awarded the {v} in {y}. / {S} won the {v} late in {p} career. | Which prize did {name} receive? / What award was given to {name}? / Which honour did {name} win?
death | place | {S} died in {v} in {y}. / {S} spent {p} final years in {v}, where {s} died in {y}. | Where did {name} die? / In which town did {name} pass away?
founder | person | {S} was founded in {y} by {v}. / {S} was established by {v} in {y}. / {v} set up {d} in {y}. | Who founded {name}? / Who was the founder of {name}? / Which person established {name}?
twin | place | {S} has been twinned with {v} since {y}. / {S} keeps a partnership with {v}. | Which town is twinned with {name}? / What is the partner town of {name}?
river | river | {S} lies on the banks of the {v}. / The {v} flows through the centre of {d}. | On which river does {name} stand? / Which river runs through {name}?
landmark | landmark | {P} best-known building is the {v}. / Visitors come to {d} to see the {v}. | What is the most famous landmark of {name}? / Which building is {name} known for?
industry | industry | The economy of {d} has long depended on {v}. / {S} grew rich from {v}. / Most families in {d} earn a living from {v}. | What is the main industry of {name}? / What do people in {name} do for a living? / Which trade supports {name}?
population | population | {S} had {v} inhabitants at the last census. / The population of {d} is about {v}. | How many people live in {name}? / What is the population of {name}?
org_founder | person | {S} was established in {y} by {v}. / {v} founded {d} in {y}. / {S} was set up by {v} in {y}. | Who founded the {name}? / Who established the {name}? / Who was the founder of the {name}?
absorbed | organisation | In {y} {s} absorbed the {v}. / {S} merged with the {v} in {y}. / {S} took over the {v} in {y}. | Which organisation did the {name} take over? / With which body did the {name} merge?
field | field | {S} is known for {v}. / {P} main activity is {v}. / Much of the work of {d} concerns {v}. | What is the {name} known for? / What does the {name} do? / What is the main activity of the {name}?
staff | staff | {S} employs about {v} people. / Some {v} people work for {d}. | How many people work for the {name}? / How large is the staff of the {name}?
leader | person | Since {y} {s} has been led by {v}. / {v} became head of {d} in {y}. / {S} is directed by {v}. | Who leads the {name}? / Who is the head of the {name}? / Who directs the {name}?
seat | place | In {y} {s} moved its offices to {v}. / {S} has had its seat in {v} since {y}. | Where does the {name} have its offices? / In which town is the {name} located?
length | length | Adults reach a length of {v} centimetres. / {S} grows to about {v} centimetres. | How long does the {name} grow? / What size does the {name} reach?
colour | colour | {S} has {v} markings on its back. / {P} body is mostly {v}. | What colour is the {name}? / What are the markings of the {name} like?
habitat | habitat | {S} lives in {v}. / {S} is found mainly in {v}. | Where does the {name} live? / What habitat does the {name} prefer?
diet | diet | {S} feeds mainly on {v}. / {P} diet consists largely of {v}. | What does the {name} eat? / What is the main food of the {name}?
describer | person | {S} was first described by {v} in {y}. / {v} described {d} in {y}. | Who first described the {name}? / Which naturalist named the {name}?
status | status | {S} is listed as {v}. / Its conservation status is {v}. | What is the conservation status of the {name}? / How threatened is the {name}?
"""
SECTIONS: dict[str, list[tuple[str, tuple[str, str]]]] = {  # kind -> (heading, the two relations it states)
    "person": [("Early life", ("teacher", "school")), ("Career", ("moved", "work")), ("Later life", ("award", "death"))],
    "place": [("History", ("founder", "twin")), ("Geography", ("river", "landmark")), ("Economy", ("industry", "population"))],
    "organisation": [("History", ("org_founder", "absorbed")), ("Activities", ("field", "staff")), ("Leadership", ("leader", "seat"))],
    "species": [("Description", ("length", "colour")), ("Ecology", ("habitat", "diet")), ("Taxonomy", ("describer", "status"))],
}
# fmt: on


@dataclass(frozen=True)
class Relation:
    value_kind: str
    statements: tuple[str, ...]
    queries: tuple[str, ...]


def _alternatives(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(" / "))


def _parse_relations(table: str) -> dict[str, Relation]:
    out = {}
    for line in filter(None, (ln.strip() for ln in table.splitlines())):
        name, kind, statements, queries = (part.strip() for part in line.split("|"))
        out[name] = Relation(kind, _alternatives(statements), _alternatives(queries))
    return out


RELATIONS = _parse_relations(_RELATIONS)


# ---------------------------------------------------------------------------------------------
# World
# ---------------------------------------------------------------------------------------------


@dataclass
class Entity:
    index: int
    group: int  # 0: pre-training articles, 1: retrieval corpus
    kind: str
    name: str
    job: str  # subtype: composer, port, academy, warbler...
    country: tuple[str, str]  # (name, adjective)
    region: str
    topics: list[str]
    fillers: list[str]
    gender: str = "it"
    works: list[str] = field(default_factory=list)  # persons: title nouns of their domain
    sci: str = ""  # species: scientific name

    def refs(self) -> dict[str, str]:
        """Pronoun and description slots for templates."""
        pron = {"he": ("he", "his"), "she": ("she", "her"), "it": ("it", "its")}[self.gender]
        desc = f"the {self.job}"
        return {
            "s": pron[0],
            "S": pron[0].capitalize(),
            "p": pron[1],
            "P": pron[1].capitalize(),
            "d": desc,
            "D": desc.capitalize(),
        }


def invented_word(rng: random.Random, max_len: int = 9) -> str:
    """A capitalised word of 2-3 random syllables, 4 to ``max_len`` letters."""
    while True:
        n = rng.choice((2, 2, 3))
        w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
        if 4 <= len(w) <= max_len:
            return w.capitalize()


class _Names:
    """Invented words, each handed out once (so every entity name is unique)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, max_len: int = 9) -> str:
        while (w := invented_word(self.rng, max_len)) in self.used:
            pass
        self.used.add(w)
        return w


def _make_entity(rng: random.Random, names: _Names, index: int, group: int, kind: str, countries) -> Entity:
    country, region = rng.choice(countries), names.word()
    gender, works, sci = "it", [], ""
    vocab: dict[str, Any]
    if kind == "person":
        vocab = PERSON_DOMAINS[rng.choice(sorted(PERSON_DOMAINS))]
        gender = rng.choice(("he", "she"))
        name, job, works = (
            f"{rng.choice(GIVEN[gender])} {names.word()}",
            rng.choice(vocab["jobs"]),
            vocab["works"],
        )
    elif kind == "place":
        vocab = PLACE
        name, job = names.word(7) + rng.choice(PLACE_SUFFIX), rng.choice(PLACE["types"])
    elif kind == "organisation":
        vocab = ORGANISATION
        job = rng.choice(sorted(ORGANISATION["types"]))
        name = f"{names.word()} {job.capitalize()}"
    else:
        vocab = SPECIES
        job = rng.choice(sorted(SPECIES["groups"]))
        name, sci = f"{names.word()} {job}", f"{names.word()} {names.word().lower()}ensis"
    topics = rng.sample(vocab["topics"], 3)
    return Entity(
        index, group, kind, name, job, country, region, topics, vocab["fillers"], gender, works, sci
    )


def make_world(seed: int, n_articles: int, n_corpus_articles: int) -> list[Entity]:
    """All entities: indices < n_articles form group 0 (pre-training), the rest group 1."""
    rng = random.Random(f"llara-synthetic:{seed}:world")
    names = _Names(rng)
    countries = [(c, c + "n") for c in (names.word(6) + "ia" for _ in range(6))]
    world: list[Entity] = []
    for group, count in ((0, n_articles), (1, n_corpus_articles)):
        kinds = [KINDS[i % len(KINDS)] for i in range(count)]
        rng.shuffle(kinds)
        world.extend(_make_entity(rng, names, len(world), group, k, countries) for k in kinds)
    return world


# ---------------------------------------------------------------------------------------------
# Articles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryCandidate:
    relation: str
    answer: str
    query: str


@dataclass(frozen=True)
class Paragraph:
    heading: str | None  # None for the lead
    text: str
    candidates: tuple[QueryCandidate, ...]


@dataclass(frozen=True)
class Article:
    entity: Entity
    paragraphs: tuple[Paragraph, ...]

    def wiki_text(self) -> str:
        """The article body as ``wikimedia/wikipedia`` has it: headings on lines of their own."""
        lines = []
        for para in self.paragraphs:
            if para.heading:
                lines.append(para.heading + ".")
            lines.append(para.text)
        return "\n".join(lines)


class _Pools:
    """Entities by (group, kind or subtype), for references to other entities."""

    def __init__(self, world: list[Entity]) -> None:
        self.by_key: dict[tuple[int | None, str], list[Entity]] = {}
        for e in world:
            for group in (e.group, None):
                for key in (e.kind, e.job):
                    self.by_key.setdefault((group, key), []).append(e)

    def pick(self, rng: random.Random, entity: Entity, key: str) -> str:
        """A random other entity of ``key`` from ``entity``'s group (the other group only if it has none)."""
        for group in (entity.group, None):
            pool = self.by_key.get((group, key), [])
            if len(pool) > 1 or (pool and pool[0] is not entity):
                while (other := rng.choice(pool)) is entity:
                    pass
                return other.name
        if key == "academy":
            return self.pick(rng, entity, "organisation")
        raise DataError(f"no entity of kind {key!r} in the world; raise --n-articles or --n-corpus-articles")


def _value(rng: random.Random, pools: _Pools, e: Entity, kind: str) -> str:
    if kind in ("person", "place", "organisation", "academy"):
        return pools.pick(rng, e, kind)
    if kind == "work":
        if rng.random() < 0.5:
            return f"the {rng.choice(ADJ).capitalize()} {rng.choice(e.works)}"
        return f"the {rng.choice(e.works)} of {pools.pick(rng, e, 'place')}"
    if kind == "award":
        return f"{pools.pick(rng, e, 'place')} {rng.choice(('Prize', 'Medal', 'Award'))}"
    if kind == "river":
        return f"{invented_word(rng)} River"
    if kind == "landmark":
        return f"{rng.choice(ADJ).capitalize()} {rng.choice(PLACE['buildings'])}"
    if kind == "industry":
        return rng.choice(PLACE["industries"])
    if kind == "population":
        return f"{rng.randrange(800, 90000, 100):,}"
    if kind == "field":
        return rng.choice(ORGANISATION["types"][e.job])
    if kind == "staff":
        return str(rng.randrange(20, 3000, 10))
    if kind == "length":
        lo, hi = SPECIES["groups"][e.job][1]
        return str(rng.randint(lo, hi))
    if kind == "diet":
        return rng.choice(SPECIES["groups"][e.job][2])
    return rng.choice(SPECIES[{"colour": "colours", "habitat": "habitats", "status": "statuses"}[kind]])


def _slots(rng: random.Random, pools: _Pools, e: Entity) -> dict[str, str]:
    topics = {f"t{i}": t for i, t in enumerate(e.topics)}
    return {
        **topics,
        "adj": rng.choice(ADJ),
        "town": pools.pick(rng, e, "place"),
        "person": pools.pick(rng, e, "person"),
        "year2": str(rng.randint(1700, 2015)),
        "country": e.country[0],
    }


def _describe_first_subject(template: str) -> str:
    """Turn the first subject slot ({S} or {s}) into the description slot ({D} or {d})."""
    hits = [i for i in (template.find("{S}"), template.find("{s}")) if i >= 0]
    if not hits:
        return template
    i = min(hits)
    return template[: i + 1] + ("D" if template[i + 1] == "S" else "d") + template[i + 2 :]


def _with_article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def write_article(seed: int, e: Entity, pools: _Pools, omit_rate: float = 0.15) -> Article:
    """One article about ``e`` (its own RNG, so articles do not depend on each other's draws)."""
    rng = random.Random(f"llara-synthetic:{seed}:article:{e.index}")
    refs = e.refs()
    born = rng.randint(1650, 1930)
    founded = rng.randint(1750, 1950)
    years = {  # consistent dates per article
        "moved": born + rng.randint(20, 35),
        "award": born + rng.randint(40, 55),
        "death": born + rng.randint(58, 90),
        "founder": rng.randint(1100, 1800),
        "twin": rng.randint(1950, 2010),
        "org_founder": founded,
        "absorbed": founded + rng.randint(10, 60),
        "seat": founded + rng.randint(5, 70),
        "leader": rng.randint(1990, 2022),
        "describer": rng.randint(1750, 1990),
    }
    group = SPECIES["groups"][e.job][0] if e.kind == "species" else ""
    lead_slots = {
        **refs,
        **_slots(rng, pools, e),
        "name": e.name,
        "job": e.job,
        "nat": e.country[1],
        "country": e.country[0],
        "region": e.region,
        "born": str(born),
        "died": str(years["death"]),
        "a_job": _with_article(e.job),
        "group": group,
        "a_group": _with_article(group),
        "sci": e.sci,
    }
    lead = [rng.choice(LEADS[e.kind]).format(**lead_slots)]
    lead += [f.format(**lead_slots) for f in rng.sample(LEAD_FILLERS, rng.randint(1, 2))]
    paragraphs = [Paragraph(None, " ".join(lead), ())]
    fillers = rng.sample(e.fillers, len(e.fillers))  # drawn without replacement across the article
    for heading, relations in SECTIONS[e.kind]:
        items: list[tuple[str, QueryCandidate | None]] = []
        for rel in relations:
            if rng.random() < omit_rate:
                continue
            relation = RELATIONS[rel]
            value = _value(rng, pools, e, relation.value_kind)
            year = years.get(rel, 0)  # relations without a year have no {y} in their templates
            cand = QueryCandidate(rel, value, rng.choice(relation.queries).format(name=e.name))
            items.append(
                (rng.choice(relation.statements).replace("{v}", value).replace("{y}", str(year)), cand)
            )
        items += [(fillers.pop(), None) for _ in range(rng.randint(1, 2))]
        rng.shuffle(items)
        slots = _slots(rng, pools, e)
        sentences = []
        for i, (template, _) in enumerate(items):
            if i == 0 and rng.random() < 0.6:  # open the section with the description
                template = _describe_first_subject(template)
            sentence = template.format(**refs, **slots)
            sentences.append(sentence[0].upper() + sentence[1:])
        cands = tuple(c for _, c in items if c is not None)
        paragraphs.append(Paragraph(heading, " ".join(sentences), cands))
    return Article(e, tuple(paragraphs))


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def _url(title: str) -> str:
    return "https://synthetic.invalid/wiki/" + title.replace(" ", "_")


def write_wiki_parquet(articles: list[Article], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [str(a.entity.index) for a in articles],
            "url": [_url(a.entity.name) for a in articles],
            "title": [a.entity.name for a in articles],
            "text": [a.wiki_text() for a in articles],
        }
    )
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


_TOO_FEW_HINTS = {  # how to get more askable paragraphs, per query stream
    "queries": "raise --n-corpus-articles or lower --n-train-queries/--n-test-queries",
    "pretrain-queries": "raise --n-articles or lower --n-pretrain-queries",
}


def check_askable(articles: list[Article], wanted: int, stream: str) -> None:
    """Fail (naming the flags to change) when fewer paragraphs than ``wanted`` can carry a query."""
    have = sum(1 for a in articles for para in a.paragraphs if para.candidates)
    if have < wanted:
        raise DataError(
            f"only {have} paragraphs can carry a query but {wanted} queries were asked for; "
            + _TOO_FEW_HINTS[stream]
        )


def write_beir(
    articles: list[Article],
    out: Path,
    seed: int,
    n_train: int,
    n_test: int,
    config: dict[str, Any],
    stream: str = "queries",
) -> dict[str, int]:
    """Corpus = every paragraph; one query per chosen section paragraph; seeded train/test split.

    ``stream`` names the random stream queries are drawn from: the retrieval set uses ``queries``,
    the pre-training group's training set ``pretrain-queries``, so neither changes the other. A split
    with no queries gets no qrels file."""
    rng = random.Random(f"llara-synthetic:{seed}:{stream}")
    corpus, pool = [], []
    for a in articles:
        for j, para in enumerate(a.paragraphs):
            doc_id = f"doc{a.entity.index}-{j}"
            corpus.append({"_id": doc_id, "title": a.entity.name, "text": para.text})
            if para.candidates:
                pool.append((doc_id, para))
    check_askable(articles, n_train + n_test, stream)
    chosen = rng.sample(pool, n_train + n_test)  # a random, unordered sample: the split is seeded too
    queries, qrels = [], {"train": [], "test": []}
    for i, (doc_id, para) in enumerate(chosen):
        cand = rng.choice(para.candidates)
        qid = f"q{i}"
        queries.append(
            {"_id": qid, "text": cand.query, "metadata": {"answer": cand.answer, "relation": cand.relation}}
        )
        qrels["train" if i < n_train else "test"].append(f"{qid}\t{doc_id}\t1\n")
    with atomic_folder(out, overwrite=True) as tmp:  # a rerun replaces the folder
        _jsonl(tmp / "corpus.jsonl", corpus)
        _jsonl(tmp / "queries.jsonl", queries)
        (tmp / "qrels").mkdir()
        for split, rows in qrels.items():
            if not rows:  # a split without queries has no qrels file (no such split)
                continue
            (tmp / "qrels" / f"{split}.tsv").write_text(
                "query-id\tcorpus-id\tscore\n" + "".join(rows), encoding="utf-8"
            )
        counts = {
            "corpus_docs": len(corpus),
            "queries": len(queries),
            "train_queries": n_train,
            "test_queries": n_test,
        }
        atomic_write_json(tmp / "synthetic.json", {**config, "beir_counts": counts})
    return counts


def generate(
    seed: int,
    articles_out: str | Path | None,
    beir_out: str | Path | None,
    n_articles: int = 1500,
    n_corpus_articles: int = 250,
    n_train_queries: int = 200,
    n_test_queries: int = 100,
    pretrain_beir_out: str | Path | None = None,
    n_pretrain_queries: int = 0,
) -> dict[str, Any]:
    """Write the pre-training parquet, the BEIR folder and, with ``pretrain_beir_out``, the fine-tuning
    set about the pre-training group (each output only where a path is given: the world is the same
    whichever are written); returns the resolved config."""
    if not (articles_out or beir_out or pretrain_beir_out):
        raise DataError("nothing to write: give --articles-out, --beir-out and/or --pretrain-beir-out")
    for name, value, low in (
        ("n_articles", n_articles, 2),
        ("n_corpus_articles", n_corpus_articles, 2),
        ("n_train_queries", n_train_queries, 0),
        ("n_test_queries", n_test_queries, 1),
        ("n_pretrain_queries", n_pretrain_queries, 1 if pretrain_beir_out else 0),
    ):
        if value < low:
            raise DataError(f"{name} must be >= {low}, got {value}; raise --{name.replace('_', '-')}")
    world = make_world(seed, n_articles, n_corpus_articles)
    pools = _Pools(world)
    articles = [write_article(seed, e, pools) for e in world]
    config: dict[str, Any] = {
        "stage": "llara.synthetic",
        "args": {
            "seed": seed,
            "articles_out": str(articles_out) if articles_out else None,
            "beir_out": str(beir_out) if beir_out else None,
            "n_articles": n_articles,
            "n_corpus_articles": n_corpus_articles,
            "n_train_queries": n_train_queries,
            "n_test_queries": n_test_queries,
        },
    }
    if pretrain_beir_out:
        config["args"].update(pretrain_beir_out=str(pretrain_beir_out), n_pretrain_queries=n_pretrain_queries)
    pretrain = articles[:n_articles]
    if pretrain_beir_out:  # checked before anything is written
        check_askable(pretrain, n_pretrain_queries, "pretrain-queries")
    counts: dict[str, int] = {}
    if beir_out:
        counts = write_beir(
            articles[n_articles:], Path(beir_out), seed, n_train_queries, n_test_queries, config
        )
    if pretrain_beir_out:
        pre = write_beir(
            pretrain, Path(pretrain_beir_out), seed, n_pretrain_queries, 0, config, "pretrain-queries"
        )
        counts["pretrain_corpus_docs"], counts["pretrain_queries"] = pre["corpus_docs"], pre["train_queries"]
    config["counts"] = {
        "articles": len(pretrain),
        "words": sum(len(a.wiki_text().split()) for a in pretrain),
        **counts,
    }
    if articles_out:
        write_wiki_parquet(pretrain, Path(articles_out))
        write_config(articles_out, config)
    return config


@cli_main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m llara.synthetic", description="Seeded synthetic encyclopedia + BEIR set."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--articles-out", type=Path, help="pre-training parquet (id, url, title, text)")
    p.add_argument("--beir-out", type=Path, help="BEIR folder to write (the retrieval set)")
    p.add_argument("--n-articles", type=int, default=1500, help="pre-training articles")
    p.add_argument(
        "--n-corpus-articles",
        type=int,
        default=250,
        help="held-out articles whose paragraphs form the corpus",
    )
    p.add_argument("--n-train-queries", type=int, default=200)
    p.add_argument("--n-test-queries", type=int, default=100)
    p.add_argument(
        "--pretrain-beir-out",
        type=Path,
        help="a fine-tuning set (BEIR layout, train split only) about the pre-training articles",
    )
    p.add_argument(
        "--n-pretrain-queries", type=int, default=3000, help="its queries (with --pretrain-beir-out)"
    )
    a = p.parse_args(argv)
    config = generate(
        a.seed,
        a.articles_out,
        a.beir_out,
        a.n_articles,
        a.n_corpus_articles,
        a.n_train_queries,
        a.n_test_queries,
        a.pretrain_beir_out,
        a.n_pretrain_queries,
    )
    print(json.dumps(config["counts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
