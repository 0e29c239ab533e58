"""Training: fine-tuning a P3S model on the references with ``L = L_LDM + gamma * L_ac`` (eq. 11-14).

:mod:`.loop` runs the epochs; :mod:`.step` computes one step's losses (:mod:`.losses`);
:mod:`.optimiser`, :mod:`.precision`, :mod:`.checkpointing` and :mod:`.scope_memory` say how it
fits the device; :mod:`.finetune_run` and :mod:`.checkpoints` are the Fine-tune's runs and files.
"""
