"""gradprobe inside the training frameworks people use: a callback each, a few lines for the user.

- :mod:`gradprobe.integrations.lightning` -- ``GradprobeCallback`` for a Lightning 2.x ``Trainer``
  (``pip install 'gradprobe[lightning]'``);
- :mod:`gradprobe.integrations.transformers` -- ``GradprobeCallback`` for the Hugging Face
  ``Trainer`` (``pip install 'gradprobe[transformers]'``).

Importing this package imports neither framework (nor torch); each module imports its own
framework and raises :class:`~gradprobe.errors.MissingExtraError` with the install hint when
it is missing.
"""

from __future__ import annotations
