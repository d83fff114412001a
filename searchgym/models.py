"""The old name of `searchgym.agent.models` (``searchgym.models.load_model`` in earlier READMEs): importing
it gives that very module, so old imports and patches keep working."""

import sys

from searchgym.agent import models as _models

sys.modules[__name__] = _models
