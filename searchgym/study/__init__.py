"""A study: arms × seeds of training recipes, run and compared. `spec` reads and checks the study file
(arms, presets, overrides; the one config system of `searchgym.util.config_schema`), `runner` resolves each run's
recipe, trains or evaluates what is not done yet and writes the study folder that `searchgym.report` reads."""

from searchgym.study.spec import Arm, RunSpec, Study, load_study

__all__ = ["Arm", "RunSpec", "Study", "load_study"]
