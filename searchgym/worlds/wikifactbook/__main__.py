"""``python -m searchgym.worlds.wikifactbook [PATH]``: regenerate the question set (corpora/README.md)."""

import sys

from searchgym.worlds.wikifactbook.questions import main

main(sys.argv[1:])
