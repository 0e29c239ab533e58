"""p3s-batch: queue a ComfyUI API-format workflow once per item of a CSV/JSONL file, over one or
many servers (given, or launched per GPU), locally or on Ray, and collect the outputs with a
SQLite ledger that resumes. ``pip install .`` installs it with the ``p3s-batch`` command (httpx,
tenacity, websockets, tqdm); ``pip install .[ray]`` adds the Ray engine."""
