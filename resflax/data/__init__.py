"""Input data: tfds pipelines with per-process slices of identical global batches, and offline builders.

``DATASETS`` (name -> ``Source``) holds resflax's named datasets (offline builders, download hosts);
any other ``config.dataset`` is a tfds builder name (``fashion_mnist``, ``cifar100``, one of the
user's). ``build(config, input_shape)`` returns a ``Data`` with the dataset's ``info``,
``steps_per_epoch``, ``train_batches(epoch, start_step)`` and ``eval_batches()``.

``sources.py``: the named datasets, any tfds builder, preparing them (download or build);
``pipeline.py``: the splits in memory (cached as arrays) and the batches of every process.
"""

from resflax.data.pipeline import Data, build
from resflax.data.sources import DATASETS, DatasetInfo, Source, prepared_builder, tfds_source

__all__ = ['DATASETS', 'Data', 'DatasetInfo', 'Source', 'build', 'prepared_builder', 'tfds_source']
