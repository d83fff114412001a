"""``python -m searchgym.testing``: the fuzzer's old entry point, now `searchgym fuzz` (same options)."""

import sys

from searchgym.testing.fuzzing import main

print("python -m searchgym.testing is now `searchgym fuzz` (same options, `searchgym fuzz --help`); running it",
      file=sys.stderr)
sys.exit(main())
