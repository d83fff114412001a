"""Words of the synthetic world: fictional names, sentence templates, question and query phrasings.

Everything the model reads about the world is rendered from these tables, so they live apart from the
generator's logic. Names are built from syllables (no real-world names: a model cannot know the answers
from pretraining); every fact has several sentence templates so documents do not share one surface form.
"""

from __future__ import annotations

import random
import re

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br", "dr", "kr",
          "st", "tr", "vel", "mor", "qu")
VOWELS = ("a", "e", "i", "o", "u", "ae", "ai", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "th", "x")


def make_word(rng: random.Random, syllables: int) -> str:
    """A pronounceable capitalised word of ``syllables`` consonant-vowel syllables.

    >>> make_word(random.Random(3), 2).isalpha()
    True
    """
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(CODAS)).capitalize()


def tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens, the unit of the strategy classifier's overlap rules.

    >>> tokens("Where was Ilvar Tessa born? (1874)")
    ['where', 'was', 'ilvar', 'tessa', 'born', '1874']
    """
    return re.findall(r"[a-z0-9]+", text.lower())


# Function words ignored when comparing a query with a question.
STOPWORDS = frozenset(
    "a an the of in on at to for by and or is are was were be been which what who whom whose where when "
    "how did does do that this it its from with as first".split())

OCCUPATIONS = ("cartographer", "weaver", "glassblower", "archivist", "shipwright", "astronomer", "brewer",
               "herbalist", "stonemason", "translator", "clockmaker", "surveyor", "potter", "merchant")
ORG_TYPES = ("Guild", "Press", "Company", "Society", "Works", "Trading House", "Institute", "Foundry",
             "Bank", "Observatory", "Academy", "Collective")
WORK_NOUNS = ("Chronicle", "Ledger", "Atlas", "Letters", "Hymns", "Codex", "Treatise", "Almanac",
              "Songs", "Sagas")
GENRES = ("book", "treatise", "collection of poems", "travel journal", "history", "novel", "manual")
SECONDARY_TITLES = ("{name} — profile", "Notes on {name}", "{name} (record)", "About {name}")

# Relations: subject kind -> relation -> object kind ("attr" for literal values).
RELATIONS: dict[str, dict[str, str]] = {
    "person": {"born_in": "city", "works_for": "org", "birth_year": "attr"},
    "city": {"in_country": "country", "population": "attr"},
    "country": {"capital": "city", "currency": "attr"},
    "org": {"based_in": "city", "founded_by": "person", "founding_year": "attr"},
    "work": {"created_by": "person", "published_by": "org", "year": "attr"},
}
# Relations a bridge question may follow (population answers are bad exact-match targets).
BRIDGE_RELATIONS = {k: tuple(r for r in v if r != "population") for k, v in RELATIONS.items()}

LEADS = {
    "person": ("{name}{aka} is {a} {flavour}.", "{name}{aka} is known as {a} {flavour}.",
               "{name}{aka} works as {a} {flavour}."),
    "city": ("{name}{aka} is a city.", "{name}{aka} is {a} {flavour} city.", "The city of {name}{aka}."),
    "country": ("{name}{aka} is a country.", "{name}{aka} is {a} {flavour} country."),
    "org": ("{name}{aka} is an organisation.", "{name}{aka} is {a} {flavour} institution."),
    "work": ("{name}{aka} is {a} {flavour}.", "{name}{aka} is a well-known {flavour}."),
}
CITY_FLAVOURS = ("river", "harbour", "hill", "market", "walled", "mountain")
COUNTRY_FLAVOURS = ("coastal", "landlocked", "island", "highland")
ORG_FLAVOURS = ("trading", "scholarly", "charitable", "mining", "printing")

# Sentence templates per relation: {s} subject, {o} object.
FACT_TEMPLATES = {
    "born_in": ("{s} was born in {o}.", "{s} is a native of {o}.", "{s} comes from the city of {o}.",
                "Born in {o}, {s} spent a childhood there."),
    "works_for": ("{s} works for {o}.", "{s} is employed by {o}.", "{s} holds a post at {o}.",
                  "These days {s} works at {o}."),
    "birth_year": ("{s} was born in the year {o}.", "{s} was born in {o}.", "The birth year of {s} is {o}."),
    "in_country": ("{s} is a city in {o}.", "{s} lies within {o}.", "The city of {s} belongs to {o}."),
    "population": ("{s} has a population of {o}.", "About {o} people live in {s}.",
                   "{s} is home to {o} residents."),
    "capital": ("The capital of {s} is {o}.", "{s} is governed from its capital, {o}.",
                "{o} serves as the capital of {s}."),
    "currency": ("The currency of {s} is the {o}.", "In {s} people pay with the {o}.",
                 "Trade in {s} is conducted in the {o}."),
    "based_in": ("{s} is based in {o}.", "{s} has its headquarters in {o}.", "The seat of {s} is in {o}."),
    "founded_by": ("{s} was founded by {o}.", "{o} founded {s}.", "{s} owes its creation to {o}."),
    "founding_year": ("{s} was founded in {o}.", "{s} was established in the year {o}.",
                      "{s} dates from {o}."),
    "created_by": ("{s} was written by {o}.", "{o} is the author of {s}.", "{s} is a work by {o}."),
    "published_by": ("{s} was published by {o}.", "{o} published {s}.",
                     "{s} appeared under the imprint of {o}."),
    "year": ("{s} first appeared in {o}.", "{s} was first published in {o}.", "{s} dates from the year {o}."),
}

# Inverse mentions on the object's main page: {o} the page's entity, {items} the subjects.
BACKLINK_TEMPLATES = {
    "born_in": ("Natives of {o} include {items}.", "People born in {o}: {items}."),
    "works_for": ("People who work for {o} include {items}.", "Staff of {o}: {items}."),
    "in_country": ("Cities of {o}: {items}.", "{o} contains the cities {items}."),
    "capital": ("{o} is the capital of {items}.",),
    "based_in": ("Organisations based in {o}: {items}.", "{o} is home to {items}."),
    "founded_by": ("{o} founded {items}.", "Organisations founded by {o}: {items}."),
    "created_by": ("{o} wrote {items}.", "Works by {o}: {items}."),
    "published_by": ("{o} has published {items}.", "Publications of {o}: {items}."),
}

# Bridge questions: the last relation asks, the inner ones are noun phrases around the named entity.
QUESTION_TEMPLATES = {
    "born_in": ("In which city was {x} born?", "Where was {x} born?"),
    "works_for": ("Which organisation does {x} work for?", "Who employs {x}?"),
    "birth_year": ("In which year was {x} born?",),
    "in_country": ("In which country is {x}?", "Which country is {x} in?"),
    "capital": ("What is the capital of {x}?",),
    "currency": ("What currency is used in {x}?", "What is the currency of {x}?"),
    "based_in": ("In which city is {x} based?", "Where is {x} headquartered?"),
    "founded_by": ("Who founded {x}?",),
    "founding_year": ("In which year was {x} founded?",),
    "created_by": ("Who wrote {x}?", "Who is the author of {x}?"),
    "published_by": ("Who published {x}?", "Which organisation published {x}?"),
    "year": ("In which year did {x} first appear?",),
}
NOUN_PHRASES = {
    "born_in": ("the birthplace of {x}", "the city where {x} was born"),
    "works_for": ("the employer of {x}", "the organisation employing {x}"),
    "in_country": ("the country of {x}", "the country containing {x}"),
    "capital": ("the capital of {x}",),
    "based_in": ("the home city of {x}", "the city where {x} is based"),
    "founded_by": ("the founder of {x}", "the person who founded {x}"),
    "created_by": ("the author of {x}", "the writer of {x}"),
    "published_by": ("the publisher of {x}", "the organisation that published {x}"),
}
COMPARISON_TEMPLATES = {  # attribute -> (templates, "min" or "max" wins)
    "birth_year": (("Who was born earlier, {x} or {y}?", "Which of {x} and {y} is older?"), "min"),
    "founding_year": (("Which was founded earlier, {x} or {y}?", "Which is older, {x} or {y}?"), "min"),
    "population": (("Which city has more inhabitants, {x} or {y}?",
                    "Which is larger by population, {x} or {y}?"), "max"),
    "year": (("Which appeared first, {x} or {y}?", "Which is older, {x} or {y}?"), "min"),
}
INTERSECTION_TEMPLATES = {  # (answer kind, relation 1, relation 2) -> templates over {a} and {b}
    ("person", "born_in", "works_for"): ("Which person born in {a} works for {b}?",
                                         "Who was born in {a} and works for {b}?"),
    ("org", "based_in", "founded_by"): ("Which organisation based in {a} was founded by {b}?",),
    ("work", "created_by", "published_by"): ("Which work by {a} was published by {b}?",),
}

# Query phrasings used by the demonstrators: keyword and natural forms per relation, forward
# (looking up the subject's fact) and inverse (looking up the subjects of an object).
REL_KEYWORDS = {"born_in": "birthplace", "works_for": "employer", "birth_year": "birth year",
                "in_country": "country", "population": "population", "capital": "capital",
                "currency": "currency", "based_in": "headquarters", "founded_by": "founder",
                "founding_year": "founding year", "created_by": "author", "published_by": "publisher",
                "year": "publication year"}
REL_NATURAL = {"born_in": "Where was {x} born?", "works_for": "Who does {x} work for?",
               "birth_year": "When was {x} born?", "in_country": "Which country is {x} in?",
               "population": "How many people live in {x}?", "capital": "What is the capital of {x}?",
               "currency": "What money is used in {x}?", "based_in": "Where is {x} based?",
               "founded_by": "Who founded {x}?", "founding_year": "When was {x} founded?",
               "created_by": "Who wrote {x}?", "published_by": "Who published {x}?",
               "year": "When did {x} appear?"}
INVERSE_KEYWORDS = {"born_in": "natives", "works_for": "staff", "based_in": "organisations",
                    "founded_by": "founded", "created_by": "works", "published_by": "publications"}
INVERSE_NATURAL = {"born_in": "Who was born in {x}?", "works_for": "Who works for {x}?",
                   "based_in": "Which organisations are based in {x}?", "founded_by": "What did {x} found?",
                   "created_by": "What did {x} write?", "published_by": "What did {x} publish?"}
