"""The training config's schema: every key a run takes, its type and its range.

    types.py     the fixed part (conf/config.yaml) and eval.py's options: types and ranges
    derive.py    the parts a choice selects, derived from the code the choice names
    messages.py  an OmegaConf error as one line naming the key as typed and what is valid
    validate.py  `validate`: types, unknown keys, ranges, the optimizer, the rules between keys

Types and unknown keys are OmegaConf's job: a composed config is merged into structured
configs, so a wrong type or a key that does not exist is refused by name. Nothing here changes
the config a run trains with: the typed copy is only checked, so a run's identity is what the
composed config says.
"""
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

import data as datasets
import models
import norms

from .derive import data_schema, model_schema, norm_schema, trainer_schema
from .types import EvalConfig, TrainConfig
from .validate import check_ranges, validate


def open_trainer() -> DictConfig:
    """The `trainer` node open to new keys, first in conf/config.yaml's defaults: any Trainer
    argument is `trainer.<arg>=...` on the command line, without `+`, as Lightning users type
    it. `validate` checks every key against Lightning's Trainer signature, so a misspelt one is
    still one line naming it. The rest of the config stays closed (struct)."""
    node = OmegaConf.create({"trainer": {}})
    OmegaConf.set_struct(node.trainer, False)
    return node


def register() -> None:
    """The schemas in Hydra's ConfigStore: `train_schema`, `eval_schema` (eval.py's config), and
    under schema/<group>/ one per norm kind, model arch and data set (for tools and tests;
    `validate` derives them itself)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalConfig)
    for kind in norms.kinds():
        store.store(group="schema/norm", name=kind, node=norm_schema(kind))
    for arch in models.ARCHS:
        store.store(group="schema/model", name=arch, node=model_schema(arch))
    for name in datasets.DATASETS:
        store.store(group="schema/data", name=name, node=data_schema(name))
    store.store(group="schema", name="trainer", node=trainer_schema())
    store.store(name="open_trainer", node=open_trainer())


__all__ = ["check_ranges", "register", "validate"]
