"""The on-disk cache of purified shards (:mod:`.store`, :mod:`.maintenance`) and the work folder
(:mod:`.work_folder`)."""
