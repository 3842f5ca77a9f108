"""Explanation methods, one module per family; use :func:`xaitf.create_explainer` to build them."""
