"""Inspection: what users look at rather than read; nothing here changes a model or an image's content.

Cross-attention maps and ``L_ac`` while sampling (eq. 11-13, :mod:`.attention_maps`), their
overlays and the Fine-tune's (:mod:`.reference_overlays`), point previews, loss and schedule plots.
"""
