"""The official pretrained purifiers: an official purifier's recipe file (:mod:`.recipe`), the registry of them
(:mod:`.registry`: ``recipes/`` and the copies bundled in ``bundled/``) and which copy ``from_pretrained`` loads
(:mod:`.resolve`: a folder, the Hub or a bundled copy)."""
