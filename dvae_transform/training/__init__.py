"""Fitting D-VAE: the loop (:mod:`.loop`), its training sets (:mod:`.sets`, :mod:`.streamed`), resume state
(:mod:`.resume`), the losses (:mod:`.losses`) and the refit when the shortcut check fails (:mod:`.restarts`)."""
