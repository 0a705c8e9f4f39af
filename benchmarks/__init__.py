"""The benchmark: resflax's train step against Keras 3 (TensorFlow and JAX backends) and PyTorch.

For each model, at its experiment's batch size, the same input shapes, float32 and the same
optimizer (Adam / AMSGrad): the median train-step time of each framework after warm-up, its GFLOP/s
(XLA's FLOP count of the resflax step) against the measured matmul peak, its time to the first step
and peak RSS; then the tf.data input pipeline alone, one epoch end to end and the start-up of
``resflax train``. Each measurement runs in a process of its own (``workers.py``)::

    resflax bench                                   # the eight seed models, all four frameworks
    resflax bench --models mnist_resmlp zoo --frameworks resflax pytorch --json bench.json
    python scripts/bench.py --quick --models mnist_resmlp --frameworks resflax

The peers are an optional extra: ``pip install -e ".[bench]"`` (Keras 3 and PyTorch). Their
models: ``resflax.keras_seeds`` and ``keras_zoo`` (Keras), ``torch_seeds`` and ``torch_zoo``.

This package lives in the source checkout, next to ``resflax/``, and is not installed with resflax:
it times the experiments of ``experiments/configs`` and holds the peers' replicas, which a user of
resflax does not need. ``resflax bench`` runs it from the checkout (``scripts/bench.py``).
"""


def main(argv=None) -> int:
  from benchmarks.runner import main as _main  # pylint: disable=g-import-not-at-top
  return _main(argv)
