"""The HTTP front door: ``codedfarm serve`` speaks the Open Inference Protocol (KServe v2)
and codes single requests into batches. Imports nothing heavy until the server starts."""

__all__: list[str] = []
