"""Selection: the user's points pick the subject, and the references are cleaned of look-alikes.

Points (:mod:`.points`) -> RNGR mask, ``Otsu(Gauss(M_P * (1 - M_N)))`` (eq. 1-2, :mod:`.rngr_mask`,
through the encoder's pad-to-square :mod:`.letterbox`) -> the negatives inpainted away (:mod:`.inpaint`).
"""
