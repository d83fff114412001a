"""``python -m searchgym.testing``: the fuzzer's old entry point, now `searchgym fuzz` (same options)."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `searchgym fuzz` with ``argv`` (default: this process's arguments); its exit status."""
    from searchgym.cli import app

    try:
        app(["fuzz", *(sys.argv[1:] if argv is None else argv)], prog_name="searchgym")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


if __name__ == "__main__":
    print("python -m searchgym.testing is now `searchgym fuzz` (same options, `searchgym fuzz --help`); running it",
          file=sys.stderr)
    sys.exit(main())
