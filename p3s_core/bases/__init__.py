"""Base architectures: what P3S needs to know of the U-Net it is trained on and injected into.

:mod:`.unet_sites` reads any ComfyUI U-Net's transformer blocks (the injection sites);
one module per base (:mod:`.sd15`, the paper's base) says which blocks it must have, its last
cross-attention layer (``L_ac``, eq. 11-13) and the names saved in files; :mod:`.registry` lists them.
"""
