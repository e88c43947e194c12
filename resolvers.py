"""The Hydra resolvers conf/ uses for the values a choice implies, declared once in the code the
choice names: ${norm_default:<option>} (the registry entry of the node's norm kind),
${model_default:<option>} (the constructor of the node's model arch), ${data_default:<option>}
(the DataModule of the node's data set). conf/ states choices and recipes; these values are not
copied into it. Registered by every program that resolves a config: training, eval.py, the dry
run (harness/launch.py) and the report, which resolves the Hydra config of a run that never
wrote its record (results/runs.py)."""
from __future__ import annotations

from omegaconf import OmegaConf

import data
import models
import norms


def _default_of(choice: str, defaults, valid):
    """A resolver: the default of option `o` in the code the node's `choice` names. An unknown
    choice resolves to None, so the run directory can still be named: the config schema then
    refuses the choice in one line that lists the valid ones."""
    def resolve(o, *, _parent_):
        value = _parent_.get(choice)
        return defaults(value)[o] if value in valid() else None
    return resolve


def register() -> None:
    for name, choice, defaults, valid in (("norm_default", "kind", lambda k: norms.get(k).options, norms.kinds),
                                          ("model_default", "arch", models.defaults, lambda: models.ARCHS),
                                          ("data_default", "name", data.defaults, lambda: data.DATASETS)):
        OmegaConf.register_new_resolver(name, _default_of(choice, defaults, valid), replace=True)
