"""The on-disk cache of purified shards (:mod:`.store`, :mod:`.maintenance`), filling it from the processes of a
launch (:mod:`.fill`), and the work folder (:mod:`.work_folder`)."""
