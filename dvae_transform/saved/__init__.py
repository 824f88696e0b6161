"""A saved purifier: its folder and configs (:mod:`.layout`) and its model card (:mod:`.card`, from ``templates/``)."""
