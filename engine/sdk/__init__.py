"""The SDK: what user code imports (through `engine`). Decorators and configs (`function.py`),
futures (`future.py`), retry policy (`retries.py`), images (`image.py`), raw values
(`file.py`, `http.py`), structured logs (`logger.py`) and the one seam to
whatever runs the code (`runtime.py`). It imports nothing from the scheduler, the store, the
backends or the generated protobuf code; a test holds it to that."""
