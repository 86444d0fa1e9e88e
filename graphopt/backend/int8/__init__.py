"""The C backend's INT8 path: integer lowering of `Value.quant`-annotated groups (lowering.py)
and onnxruntime static QDQ models used to test and benchmark it (ort_qdq.py)."""
