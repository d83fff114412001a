"""The `searchgym` command line: one sub-command per job, each a thin wrapper over a library function.

Imports are lazy so `searchgym --help` answers in well under a second even though training pulls in
torch, transformers and TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="searchgym: measure exploration diversity in LLM search agents.")


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def index(recipe: Annotated[Path, typer.Argument(help="corpus recipe, e.g. corpora/wikipedia.toml")],
          rebuild: Annotated[bool, typer.Option(help="ignore the cache and rebuild")] = False) -> None:
    """Build (or load from cache) the FAISS index a corpus recipe describes."""
    from searchgym.corpus.recipe import RecipeError, index_command

    try:
        index_command(recipe, rebuild=rebuild)
    except RecipeError as e:
        _fail(str(e))


@app.command()
def search(recipe: Annotated[Path, typer.Argument(help="corpus recipe, e.g. corpora/wikipedia.toml")],
           query: Annotated[str, typer.Argument(help="the search query")],
           k: Annotated[int, typer.Option("-k", help="number of hits")] = 5) -> None:
    """Search a corpus and print the top-k hits as a table."""
    from searchgym.corpus.recipe import RecipeError, search_command

    try:
        search_command(recipe, query, k=k)
    except (RecipeError, ValueError) as e:
        _fail(str(e))


@app.command()
def envs() -> None:
    """List every registered search environment (built-in and plug-ins)."""
    from rich.console import Console
    from rich.table import Table

    from searchgym.envs import registered_envs

    table = Table("id", "description", title="searchgym environments")
    for env_id, description in registered_envs().items():
        table.add_row(env_id, description)
    Console().print(table)


@app.command()
def meter(paths: Annotated[list[Path], typer.Argument(help="run folders or trajectories.jsonl files")],
          samples: Annotated[int | None, typer.Option(help="compute every meter at this fixed n")] = None,
          out: Annotated[Path | None, typer.Option(help="where to write meters.json")] = None) -> None:
    """Compute the diversity meters of runs or trajectory files; prints a table, writes meters.json."""
    from searchgym.meters.cli import meter_command

    try:
        meter_command(paths, samples=samples, out=out)
    except ValueError as e:
        _fail(str(e))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
