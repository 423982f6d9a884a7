"""Runnable examples: ``python -m dltricks.examples.<name> --help``.

* :mod:`dltricks.examples.ddp`: :func:`dltricks.train.fit` under ``torchrun`` (data parallelism over
  processes, on one machine or several), the same script in one process.
* :mod:`dltricks.examples.mirrored`: Keras' ``MirroredStrategy`` over two logical CPU devices against one
  device at the global batch (TensorFlow).
"""
