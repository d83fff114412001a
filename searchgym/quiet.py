"""Third-party warnings searchgym silences: one table, used by the CLI and by study worker processes."""

from __future__ import annotations

import re
import sys
import warnings

# Third-party warnings that every run prints and no user can act on: (category, start of the message), each
# with why it is harmless. Matched by category and message, never by module, so searchgym's own warnings
# (plug-ins that fail to load, regenerated question files, GRPO settings that do nothing) and any new
# third-party warning still show. Any -W option or PYTHONWARNINGS (e.g. PYTHONWARNINGS=default) turns this
# off and shows them all.
KNOWN_WARNINGS = (
    # transformers 5 renamed model.is_gradient_checkpointing to is_activation_checkpointing; TRL 1.16's SFT
    # and GRPO trainers still read the old name (a deprecated alias that works the same until v6, and the
    # versions are pinned); every SFT and GRPO run printed it.
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # TRL warns that GRPOTrainer's rollout_func and environment_factory are experimental: searchgym's GRPO
    # uses them on purpose (the engine rollout and TRL's own tool loop), against the pinned TRL, with tests
    # (tests/test_grpo*.py). `make run` sets TRL_EXPERIMENTAL_SILENCE=1 for the same reason; a bare
    # `searchgym train` printed the first on every GRPO run.
    (UserWarning, "You are using 'rollout_func', which is an experimental feature"),
    (UserWarning, "You are using 'environment_factory', which is an experimental feature"),
)


def quiet_known_warnings() -> None:
    """Ignore `KNOWN_WARNINGS` in this process (the CLI and each study worker call it), unless the user set a
    warnings policy."""
    if sys.warnoptions:  # the user asked for a warnings policy (-W, PYTHONWARNINGS): theirs wins
        return
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
