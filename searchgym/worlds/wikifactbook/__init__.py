"""WikiFactbook, verified multi-hop questions over Wikipedia leads + CIA World Factbook passages (the built-in
world ``"wikifactbook"``).

`world`: the task set, the strategy classifier and the scripted demonstrators; `questions`: the versioned
question set (templates, verification, its file and cache); `extract`: one Factbook passage in, one value out.
This front only re-exports the world; ``python -m searchgym.worlds.wikifactbook [PATH]`` regenerates the
question set (``__main__``).
"""

from searchgym.worlds.wikifactbook.world import WikiFactbook

__all__ = ["WikiFactbook"]
