"""Errors raised by the generation package.

Every message is written for the person who asked for the image (or the operator, for
`ModelNotFoundError`), so callers may show `str(exc)` as is::

    GenerationError                 anything that stops a job from producing images
     ├── RequestError               the request itself is invalid (bad size, steps, prompt...)
     ├── QueueFullError             the queue (or the member's share of it) is full
     ├── JobCancelledError          the job was cancelled before it finished
     ├── OutOfMemoryError           the accelerator ran out of memory for this job
     ├── NumericalError             the model computed no usable image (NaN, overflow, black)
     └── ModelNotFoundError         the model is neither local nor downloadable
"""

from __future__ import annotations


class GenerationError(Exception):
    """Base class: a job (or the engine) could not produce images."""


class RequestError(GenerationError, ValueError):
    """The request is invalid; the message says which value and what is allowed."""


class QueueFullError(GenerationError):
    """The queue cannot take this job now; the message says which limit was hit."""


class JobCancelledError(GenerationError):
    """The job was cancelled (by its owner, or because the service is shutting down)."""


class OutOfMemoryError(GenerationError):
    """The accelerator ran out of memory for this job; the worker stays usable for others."""


class NumericalError(GenerationError):
    """Every image of the job came out unusable: not-a-number or infinite values (fp16
    overflow in the UNet or the VAE, a broken fine-tune) or a uniformly black picture."""


class ModelNotFoundError(GenerationError):
    """The model could not be found locally or downloaded; the message says how to get it."""
