"""The on-disk cache of purified tensors: :mod:`.store` (one entry, its shards) and :mod:`.maintenance`
(listing and clearing entries, behind ``dvae-purify cache``)."""
