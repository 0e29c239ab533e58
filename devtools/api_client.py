"""The ComfyUI HTTP API client of the tests and the demo: the one of the batch tool (p3s_batch.api_client)."""

from p3s_batch.api_client import ComfyAPIError, ComfyClient, PromptResult

__all__ = ["ComfyAPIError", "ComfyClient", "PromptResult"]
