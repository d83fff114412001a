"""The `searchgym` command line: one sub-command per job, each a thin wrapper over a library function.

Imports are lazy so `searchgym --help` answers in well under a second even though training pulls in
torch, transformers and TRL. A bad config (`searchgym.config.ConfigError`: recipe, corpus recipe, study file,
``--set``) is one line on stderr and exit status 2, with nothing written (`_one_line`); so is a usage error (an
unknown option or command, a missing argument, a bad choice: `_Commands`), instead of click's usage panel. Known harmless
warnings of the libraries under training are silenced in one place (`searchgym.quiet`, also in study workers).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from searchgym.quiet import quiet_known_warnings
from searchgym.util.config_schema import ConfigError


class _Commands(typer.core.TyperGroup):
    """Typer's command group with click's usage errors (an unknown option or command, a missing argument, a
    bad choice or value) as one line on stderr and exit 2 (`_usage_in_one_line`), not the usage panel; help
    (``--help``, and the bare ``searchgym``) is unchanged. Both the entry point and ``CliRunner`` come here."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_in_one_line():  # the group's own options and arguments
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_in_one_line():  # the sub-command's name, its parameters, and a command's own BadParameter
            return super().invoke(ctx)


@contextlib.contextmanager
def _usage_in_one_line():
    """A click `UsageError` as ``error: searchgym train: no such option: --foo (see searchgym train --help)``
    (one line, whatever click's message spans) and exit 2; help shown for no arguments passes through."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer >= 0.29 vendors click

    try:
        yield
    except NoArgsIsHelpError:
        raise
    except UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "searchgym"
        message = " ".join(e.format_message().split())
        _fail(f"{command}: {message[:1].lower()}{message[1:]} (see {command} --help)")


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Commands,
                  help="searchgym: measure exploration diversity in LLM search agents.")


@app.callback()
def _every_command() -> None:
    quiet_known_warnings()


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    # escape: messages quote TOML tables like [lora], which rich would otherwise eat as markup;
    # soft_wrap: one message is one line (a terminal may wrap it, rich must not break it into several)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=code)


@contextlib.contextmanager
def _one_line(errors: type[Exception] | tuple[type[Exception], ...] = ConfigError, code: int = 2):
    """The one place a command's expected errors become one line and exit 2: a bad config always; commands
    whose inputs are checked by ValueError (eval, meter, report, search, calibrate) pass ``ValueError``.
    Work that ran and failed (a study's runs) is reported the same way with exit ``code`` 1."""
    try:
        yield
    except errors as e:
        _fail(str(e), code)


@app.command()
def index(recipe: Annotated[Path, typer.Argument(help="corpus recipe, e.g. corpora/wikipedia.toml")],
          rebuild: Annotated[bool, typer.Option(help="ignore the cache and rebuild")] = False) -> None:
    """Build (or load from cache) the FAISS index a corpus recipe describes."""
    from searchgym.corpus.corpus_recipe import index_command

    with _one_line():
        index_command(recipe, rebuild=rebuild)


@app.command()
def search(recipe: Annotated[Path, typer.Argument(help="corpus recipe, e.g. corpora/wikipedia.toml")],
           query: Annotated[str, typer.Argument(help="the search query")],
           k: Annotated[int, typer.Option("-k", help="number of hits")] = 5) -> None:
    """Search a corpus and print the top-k hits as a table."""
    from searchgym.corpus.corpus_recipe import search_command

    with _one_line(ValueError):
        search_command(recipe, query, k=k)


@app.command()
def serve(recipe: Annotated[Path, typer.Argument(help="corpus recipe, e.g. corpora/wikipedia.toml")],
          host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port")] = 8000,
          workers: Annotated[int, typer.Option(help="worker processes (each maps the cached index; "
                                                    "mmap = true in the recipe shares one copy)")] = 1,
          retriever: Annotated[str, typer.Option(help="dense (the recipe's FAISS index), bm25 or hybrid")] = "dense",
          ) -> None:
    """Serve a corpus over HTTP in Search-R1's protocol: POST /retrieve, GET /health."""
    from searchgym.serve import serve_command

    with _one_line(ValueError):
        serve_command(recipe, host=host, port=port, workers=workers, retriever=retriever)


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
def fuzz(actions: Annotated[int, typer.Option(help="total actions, split evenly across the envs")] = 100_000,
         env: Annotated[list[str] | None, typer.Option(help="env id (repeatable; default: every registered "
                                                            "id, `searchgym envs`)")] = None,
         embedder: Annotated[str | None, typer.Option(help="override every env's embedder, e.g. hashing (the "
                                                           "dynamics do not depend on it)")] = None,
         seed: Annotated[int, typer.Option(help="seed of the generated actions and episodes")] = 0,
         progress: Annotated[bool | None, typer.Option(help="progress bars (default: on a terminal, for "
                                                            "5,000+ actions)")] = None) -> None:
    """Fuzz search environments with generated actions; exit 1 on any exception or invariant violation.

    The actions are valid calls, near-misses, garbage and hostile text; every documented invariant is checked
    at each step (searchgym.testing.fuzzing). Prints a line per env, then the report as JSON."""
    from searchgym.testing.fuzzing import fuzz_command

    with _one_line(ValueError):
        report = fuzz_command(actions, env or (), embedder=embedder, seed=seed, progress=progress)
    if report["exceptions"] or report["violations"]:
        _fail(f"{report['exceptions']} exception(s) and {report['violations']} invariant violation(s) in "
              f"{report['actions']} actions (the first ones are listed above)", code=1)


@app.command()
def meter(paths: Annotated[list[Path], typer.Argument(help="run folders, trajectories.jsonl or rollout files "
                                                            "(chat, Search-R1)")],
          samples: Annotated[int | None, typer.Option(help="compute every meter at this fixed n")] = None,
          out: Annotated[Path | None, typer.Option(help="where to write meters.json")] = None,
          base_nll: Annotated[bool, typer.Option("--base-nll", help="also score each run's trajectories under "
                                                 "its base and its own model (support/…; loads the models)")] = False,
          format_: Annotated[str, typer.Option("--format", help="rollout files: auto (from the first line), "
                                               "searchgym, chat or search-r1 (docs/meters.md)")] = "auto",
          field: Annotated[list[str] | None, typer.Option("--field", help="read a field from another key: "
                                                          "question_id=uid (repeatable; a.b for nested)")] = None,
          ) -> None:
    """Compute the diversity meters of runs or trajectory files; prints a table, writes meters.json."""
    from searchgym.report.importers import parse_field_map
    from searchgym.report.meter_command import meter_command

    with _one_line(ValueError):
        meter_command(paths, samples=samples, out=out, base_nll=base_nll, fmt=format_,
                      fields=parse_field_map(field or ()))


@app.command()
def updates(runs: Annotated[list[Path], typer.Argument(help="trained run folders, or folders of them (a study arm)")],
            tolerance: Annotated[float, typer.Option(help="a parameter moved when |trained - base| > this")] = 1e-5,
            precision: Annotated[str, typer.Option(help="compare in float32 (the saved values) or bfloat16 "
                                                        "(the paper's setting)")] = "float32",
            out: Annotated[Path | None, typer.Option(help="where to write updates.json")] = None) -> None:
    """Where each run wrote: the share of its base's parameters it moved, and the overlap between runs."""
    from searchgym.report.updates import updates_command

    with _one_line(ValueError):
        updates_command(runs, tolerance=tolerance, precision=precision, out=out)


@app.command()
def train(recipe: Annotated[Path, typer.Argument(help="agent recipe, e.g. agents/quick.toml")],
          set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: section.key=value")] = None,
          out: Annotated[Path | None, typer.Option(help="run folder (default runs/<name>-<timestamp>)")] = None,
          resume: Annotated[bool, typer.Option(help="continue a run: skip finished stages, restart the "
                                                     "unfinished one from its last checkpoint")] = False) -> None:
    """Train an agent from a recipe (SFT and/or GRPO), then evaluate it against its base model."""
    from searchgym.train import train_command

    with _one_line():
        train_command(recipe, overrides=set_ or (), out=out, resume=resume)


@app.command(name="eval")
def eval_(model: Annotated[str, typer.Argument(help="model alias, HF folder, or a training run folder")],
          env: Annotated[str | None, typer.Option(help="environment id (default: a run folder's own env, else "
                                                       "searchgym/SyntheticWorld-Easy-v0)")] = None,
          env_kwargs: Annotated[list[str] | None, typer.Option(
              "--env-kwargs", help="env kwargs: a JSON object or key=value (repeatable; world_kwargs.size=small "
                                   "nests); merged over a run folder's own")] = None,
          questions: Annotated[int, typer.Option(help="held-out questions (the first N of the split)")] = 20,
          samples: Annotated[int, typer.Option(help="episodes sampled per question")] = 4,
          split: Annotated[str, typer.Option(help="task split")] = "test",
          temperature: Annotated[float, typer.Option(help="sampling temperature (0 = greedy)")] = 1.0,
          max_turns: Annotated[int | None, typer.Option(help="assistant turns per episode (default: a run's "
                                                             "eval.max_turns, else 8)")] = None,
          max_new_tokens: Annotated[int, typer.Option(help="tokens per assistant turn")] = 64,
          out: Annotated[Path | None, typer.Option(help="output folder (default runs/eval-<timestamp>)")] = None,
          ) -> None:
    """Sample a model on held-out questions; write trajectories.jsonl and print a summary."""
    from searchgym.train.evaluate import eval_command
    from searchgym.util.config_schema import parse_kwargs

    with _one_line(ValueError):
        eval_command(model, env, questions, samples, split=split, temperature=temperature, max_turns=max_turns,
                     max_new_tokens=max_new_tokens, out=out, env_kwargs=parse_kwargs(env_kwargs or ()) or None)


@app.command()
def experiment(study: Annotated[Path, typer.Argument(help="study file, e.g. agents/breadth-study.toml")],
               preset: Annotated[str | None, typer.Option(help="a preset of the study (its presets table), e.g. "
                                                               "tiny, quick, smollm2 or gpu")] = None,
               out: Annotated[Path | None, typer.Option(help="study folder (default runs/<study>-<preset>)")] = None,
               arms: Annotated[str | None, typer.Option(help="run only these arms, comma-separated, e.g. "
                                                             "base,sft-diverse")] = None,
               seeds: Annotated[str | None, typer.Option(help="seeds for every arm, comma-separated, e.g. 0,1")] = None,
               set_: Annotated[list[str] | None, typer.Option("--set", help="override for every arm, applied "
                                                                           "last: section.key=value")] = None,
               report: Annotated[bool, typer.Option(help="write report.html when all runs are done")] = True,
               jobs: Annotated[int, typer.Option(help="runs at once, each in its own process with one thread "
                                                      "(e.g. 2 on a 2-core CPU); logs in <study>/logs/")] = 1,
               ) -> None:
    """Run (or resume) a multi-arm study: every arm × seed, evaluated alike; then write its report."""
    from searchgym.study.runner import RunsFailed, experiment_command
    from searchgym.study.spec import parse_list

    with _one_line(), _one_line(RunsFailed, code=1):  # failed runs: one line naming each run and its log
        experiment_command(study, preset=preset, out=out, overrides=set_ or (), report=report,
                           arms=parse_list(arms, "--arms"), seeds=parse_list(seeds, "--seeds", int), jobs=jobs)


@app.command(name="report")
def report_(paths: Annotated[list[Path], typer.Argument(help="a study folder, run folders or rollout files")],
            out: Annotated[Path | None, typer.Option(help="output folder (default: the single input folder, "
                                                         "else ./report)")] = None,
            format_: Annotated[str, typer.Option("--format", help="rollout files: auto, searchgym, chat or "
                                                 "search-r1 (docs/meters.md)")] = "auto",
            field: Annotated[list[str] | None, typer.Option("--field", help="read a field from another key: "
                                                            "question_id=uid (repeatable)")] = None) -> None:
    """Write report.html (self-contained), report.md and the figures for a study or runs."""
    from searchgym.report import report_command
    from searchgym.report.importers import parse_field_map

    with _one_line(ValueError):
        page = report_command(paths, out=out, fmt=format_, fields=parse_field_map(field or ()))
    print(page)


@app.command(name="calibrate")
def calibrate_(
        questions: Annotated[int | None, typer.Option(help="held-out questions (default: the quick study's)")] = None,
        samples: Annotated[int | None, typer.Option(help="samples per question (default: the quick study's)")] = None,
        seeds: Annotated[int | None, typer.Option(help="seeds per arm (default: the quick study's)")] = None,
        model: Annotated[str | None, typer.Option(help="model for the temperature sweep: alias, model folder or "
                                                       "run folder (default: searchgym-prior if shipped, else "
                                                       "tiny)")] = None,
        reps: Annotated[int | None, typer.Option(help="simulated studies per point of a power curve")] = None,
        temp_questions: Annotated[int | None, typer.Option(help="questions of the temperature sweep")] = None,
        temp_samples: Annotated[int | None, typer.Option(help="samples per question of the temperature sweep")] = None,
        temp_max_new_tokens: Annotated[int | None, typer.Option(help="tokens per turn in the temperature sweep")] = None,
        skip_temperature: Annotated[bool, typer.Option(help="skip the temperature sweep (no model is loaded)")] = False,
        training_control: Annotated[str | None, typer.Option(help="the training-level positive control: off, tiny "
                                                                  "(~1 min) or full (~3 min; default; tiny with "
                                                                  "--quick)")] = None,
        quick: Annotated[bool, typer.Option(help="tiny sizes for CI: every code path, noisy numbers")] = False,
        out: Annotated[Path | None, typer.Option(help="folder for calibration.json, or a .json path (default "
                                                      "runs/calibration-<timestamp>)")] = None) -> None:
    """Calibrate the meters on policies of known behaviour: recovery of known strategy mixtures, power and
    minimum detectable effects of the study's claim rule, and a temperature sweep of a real model."""
    from searchgym.calibration import CalibrationConfig, calibrate_command

    given = dict(questions=questions, samples=samples, seeds=seeds, reps=reps, temp_questions=temp_questions,
                 temp_samples=temp_samples, temp_max_new_tokens=temp_max_new_tokens)
    settings = {k: v for k, v in given.items() if v is not None}
    settings.update(model=model, skip_temperature=skip_temperature)
    if training_control is not None:
        settings["training_control"] = training_control
    with _one_line(ValueError):
        config = CalibrationConfig.quick(**settings) if quick else CalibrationConfig(**settings)
        print(calibrate_command(config, out))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
