"""The P3S model: the trainable U-Net copy, the subject encoder, the zero injection layers, its files.

The copy's attn1/attn2 outputs enter the frozen U-Net through zero-initialised layers
(Multi-layers Condition Injection, the paper's Fig. 2; :mod:`.injection_pass` runs it for
training and sampling alike); the subject encoder makes the hint (RNGR-Encoder, sec. III-B).
"""
