"""Saved purifiers and official checkpoints: :mod:`.weights` (safetensors-only loading), :mod:`.layout`
(the saved folder and its configs), :mod:`.registry` (official checkpoints, built from ``recipes/``) and
:mod:`.card` (the model card, from ``templates/``)."""
