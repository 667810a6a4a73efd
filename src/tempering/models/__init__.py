"""Model families (a registry in `registry.py`; the Llama-style decoder in `llama/`), shared layers, the chunked loss.

Import what you need from its module (`tempering.models.llama.model.DecoderLM`,
`tempering.models.registry.find_preset`, ...): this package imports nothing eagerly, so
torch-free callers such as `temper presets` stay fast.
"""
