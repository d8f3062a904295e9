"""Triton kernels of poc_kernels (the ``"triton"`` backend).

One op family per module: ``_streams`` (device functions of the contract's
streams), ``distances`` (fused distances), ``inputs`` (input embeddings and the
materialized lm_head), ``layer_hook`` (the layer-hook transform), then
``custom_ops`` (torch.library registration) and ``backend`` (the glue the
public API calls). ``configs`` holds the fixed launch configurations and
``compile_check`` compiles them for real GPUs.

Importing this package does not import Triton; its modules do.
"""
