"""Multi-agent patterns on the engine, each against a real (local) LLM.

Every pattern is a folder with its `app.py` and `engine.yaml`; `llm.py` is what they share (one
chat call, lenient JSON parsing, the image with `openai` in it). The folders are packages so that
the whole `examples/` directory is shipped to the executors, `llm.py` included: the engine sends
executors the directory the application is imported from, which is the top of the package.
See `examples/README.md` for how to run them.
"""
