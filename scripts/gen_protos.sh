#!/usr/bin/env bash
# Regenerate engine/wire/v1/ from protos/. The only way generated code is produced.
# `make protos-check` runs this and fails when the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=engine/wire/v1
rm -f "$out"/*_pb2*.py "$out"/*_pb2*.pyi
python3 -m grpc_tools.protoc -I protos --python_out=engine/wire --pyi_out=engine/wire \
  --grpc_python_out=engine/wire protos/engine/v1/engine.proto
# protoc writes engine/wire/engine/v1/...; move into engine/wire/v1 and make imports relative.
mv engine/wire/engine/v1/* "$out"/
rm -rf engine/wire/engine
sed -i 's/^from engine\.v1 import engine_pb2/from engine.wire.v1 import engine_pb2/' "$out"/engine_pb2_grpc.py
