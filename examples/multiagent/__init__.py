"""Multi-agent patterns on the engine, each against a real (local) LLM.

Every pattern is a folder with its `app.py` and `engine.yaml`. Each calls the model with
`engine.ai`; `common.py` is what they share besides (the image with `openai` in it, the secrets,
the retry policy). The folders are packages so that
the whole `examples/` directory is shipped to the executors, `common.py` included: the engine sends
executors the directory the application is imported from, which is the top of the package.
See `examples/README.md` for how to run them.
"""
