"""A minimal searchgym plug-in: a task set over a tiny shipped corpus, registered by entry point.

`ElementsWorld` implements searchgym's TaskSet protocol (corpus + train/test questions) and is
registered as world ``"elements"`` in the ``searchgym.worlds`` entry-point group; `register` is the
``searchgym.envs`` entry point searchgym calls on import. It enumerates no strategies, so trajectories get no
strategy label (meters fall back to action signatures), and it can be trained with GRPO and evaluated but not
SFT-trained: SFT needs strategies, query styles and a demonstrator (the README's plug-in section shows a
minimal one; `searchgym.testing.check_search_env` says what a world lacks).
"""

from __future__ import annotations

import gymnasium

from searchgym.corpus.documents import Corpus, Document
from searchgym.tasks import Task

ENV_ID = "searchgym_plugin_example/Elements-v0"

# name, symbol, atomic number, year of discovery (or antiquity = 0), discoverer, category
ELEMENTS = [
    ("Hydrogen", "H", 1, 1766, "Henry Cavendish", "nonmetal"),
    ("Helium", "He", 2, 1868, "Pierre Janssen", "noble gas"),
    ("Lithium", "Li", 3, 1817, "Johan August Arfwedson", "alkali metal"),
    ("Beryllium", "Be", 4, 1798, "Louis Nicolas Vauquelin", "alkaline earth metal"),
    ("Boron", "B", 5, 1808, "Joseph Louis Gay-Lussac", "metalloid"),
    ("Nitrogen", "N", 7, 1772, "Daniel Rutherford", "nonmetal"),
    ("Oxygen", "O", 8, 1771, "Carl Wilhelm Scheele", "nonmetal"),
    ("Fluorine", "F", 9, 1886, "Henri Moissan", "halogen"),
    ("Neon", "Ne", 10, 1898, "William Ramsay", "noble gas"),
    ("Sodium", "Na", 11, 1807, "Humphry Davy", "alkali metal"),
    ("Magnesium", "Mg", 12, 1755, "Joseph Black", "alkaline earth metal"),
    ("Chlorine", "Cl", 17, 1774, "Carl Wilhelm Scheele", "halogen"),
    ("Argon", "Ar", 18, 1894, "Lord Rayleigh", "noble gas"),
    ("Potassium", "K", 19, 1807, "Humphry Davy", "alkali metal"),
    ("Calcium", "Ca", 20, 1808, "Humphry Davy", "alkaline earth metal"),
    ("Titanium", "Ti", 22, 1791, "William Gregor", "transition metal"),
    ("Chromium", "Cr", 24, 1797, "Louis Nicolas Vauquelin", "transition metal"),
    ("Manganese", "Mn", 25, 1774, "Johan Gottlieb Gahn", "transition metal"),
    ("Cobalt", "Co", 27, 1735, "Georg Brandt", "transition metal"),
    ("Nickel", "Ni", 28, 1751, "Axel Fredrik Cronstedt", "transition metal"),
    ("Bromine", "Br", 35, 1826, "Antoine Jerome Balard", "halogen"),
    ("Krypton", "Kr", 36, 1898, "William Ramsay", "noble gas"),
    ("Iodine", "I", 53, 1811, "Bernard Courtois", "halogen"),
    ("Xenon", "Xe", 54, 1898, "William Ramsay", "noble gas"),
]


class ElementsWorld:
    """24 element documents; "symbol of element number N" lookups and "discovered first" comparisons."""

    name = "Elements"
    strategies: tuple[str, ...] = ()
    query_styles: tuple[str, ...] = ()

    def __init__(self):
        docs = [Document(f"el:{sym}", name,
                         f"{name} is a {cat} with the chemical symbol {sym} and atomic number {z}. "
                         f"It was first isolated or identified in {year} by {who}.",
                         {"symbol": sym, "z": z, "year": year})
                for name, sym, z, year, who, cat in ELEMENTS]
        self.corpus = Corpus(docs, name="elements")
        tasks = []
        for i, (name, sym, z, _year, who, _cat) in enumerate(ELEMENTS):
            split = "test" if i % 4 == 3 else "train"
            tasks.append(Task(f"el-sym-{sym}", f"What is the chemical symbol of the element with atomic number {z}?",
                              (sym,), ((f"el:{sym}",),), 1, "lookup", split))
            tasks.append(Task(f"el-who-{sym}", f"Who discovered the element {name}?", (who,),
                              ((f"el:{sym}",),), 1, "lookup", split))
        for i, (a, b) in enumerate(zip(ELEMENTS[::2], ELEMENTS[1::2])):
            first = a if a[3] < b[3] else b
            tasks.append(Task(f"el-cmp-{a[1]}-{b[1]}", f"Which was discovered first, {a[0]} or {b[0]}?",
                              (first[0],), ((f"el:{a[1]}", f"el:{b[1]}"),), 2, "comparison",
                              "test" if i % 4 == 3 else "train"))
        self._tasks = tasks

    def tasks(self, split: str) -> list[Task]:
        return [t for t in self._tasks if t.split == split]

    def classify_strategy(self, task, calls) -> str:
        return "other"

    def demonstrator(self, strategy: str, style: str):
        raise NotImplementedError("ElementsWorld ships no scripted demonstrators")


def register() -> dict[str, str]:
    """searchgym.envs entry point: register the env with Gymnasium and describe it."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(ENV_ID, entry_point="searchgym.envs.search_env:SearchEnv",
                           kwargs={"world": "elements", "embedder": "hashing",
                                   "env_id": ENV_ID},
                           disable_env_checker=True)
    return {ENV_ID: "24 chemical elements, lookup and comparison questions (plug-in example)"}
