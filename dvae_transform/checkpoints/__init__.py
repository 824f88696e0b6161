"""Saved purifiers and official checkpoints: :mod:`.weights` (safetensors-only loading), :mod:`.layout`
(the saved folder and its configs), :mod:`.recipe` (an official checkpoint's recipe file), :mod:`.registry`
(the official checkpoints: ``recipes/`` and the copies bundled in ``bundled/``), :mod:`.resolve` (which copy
``from_pretrained`` loads: a folder, the Hub or a bundled copy) and :mod:`.card` (the model card, from
``templates/``)."""
