"""llara: LLaRA (arXiv 2312.15503) as a workflow-managed experiment grid."""

__version__ = "0.1.0"
