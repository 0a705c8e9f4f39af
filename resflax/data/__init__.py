"""Input data: tfds pipelines with per-process slices of identical global batches, and offline builders.

``DATASETS`` (name -> ``Source``) is the one list of dataset names; ``build(config, input_shape)``
returns a ``Data`` with the dataset's ``info``, ``steps_per_epoch``, ``train_batches(epoch,
start_step)`` and ``eval_batches()``.
"""

from resflax.data.pipeline import DATASETS, Data, DatasetInfo, Source, build, prepared_builder

__all__ = ['DATASETS', 'Data', 'DatasetInfo', 'Source', 'build', 'prepared_builder']
