"""Transfer learning: reuse what a network learned on one task for another.

- :mod:`dltricks.transfer.freeze`: freeze and unfreeze layers by name or depth (batch norm included), and
  summarize what will train.
- :mod:`dltricks.transfer.rates`: layer-wise (discriminative) learning rates as optimizer parameter groups.
- :mod:`dltricks.transfer.cut`: cut a trained network at a layer (a feature extractor) and replace its head.
- :mod:`dltricks.transfer.autoencoder`: pretrain an encoder on unlabeled images.
"""

from dltricks.transfer.autoencoder import Autoencoder, pretrain_autoencoder
from dltricks.transfer.cut import FeatureExtractor, embed, replace_head
from dltricks.transfer.freeze import (
    freeze,
    is_frozen_batchnorm,
    parametrized_children,
    select,
    set_trainable,
    stateful_children,
    trainable_parameters,
    trainable_summary,
    unfreeze,
)
from dltricks.transfer.rates import discriminative_rates, param_groups

__all__ = [
    "Autoencoder",
    "FeatureExtractor",
    "discriminative_rates",
    "embed",
    "freeze",
    "is_frozen_batchnorm",
    "param_groups",
    "parametrized_children",
    "pretrain_autoencoder",
    "replace_head",
    "select",
    "set_trainable",
    "stateful_children",
    "trainable_parameters",
    "trainable_summary",
    "unfreeze",
]
