"""The RKLLM backend: Rockchip's NPU LLM runtime (``librkllmrt.so``) bound with ctypes.

abi       the C structs of layouts L1.2 and L1.3, the callback type, constants
library   loading the .so, choosing the layout, the 15 functions, return-code checks
device    is there an NPU? its driver version, load and temperature
domain    IOMMU domain ids, one per loaded model
settings  a model's ``key=value`` parameters as one typed object
chat      chat messages -> one RKLLM input (role, text) and the system template
stream    the per-token side of a run: UTF-8, stop strings, limits, counts
backend   RKLLMBackend: load, generate, unload
"""
