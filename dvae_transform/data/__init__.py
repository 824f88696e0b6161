"""Datasets in and out: :mod:`.sources` (input adapters), :mod:`.purified` (``PurifiedDataset``),
:mod:`.formats` (the on-disk dataset formats of the command line) and :mod:`.output` (its output folder)."""
