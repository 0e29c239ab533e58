"""p3s-batch: queue a ComfyUI API-format workflow once per item of a CSV/JSONL file, over one or
several servers, and collect the outputs. Standard library only; ``pip install .`` installs it
with the ``p3s-batch`` command, ``python -m p3s_batch`` runs it from a checkout."""
