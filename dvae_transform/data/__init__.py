"""Datasets in and out: :mod:`.sources` (input adapters), :mod:`.purified` (``PurifiedDataset``) and
:mod:`.formats` (the on-disk dataset formats of the command line)."""
