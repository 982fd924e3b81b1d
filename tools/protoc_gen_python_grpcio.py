#!/usr/bin/env python3
"""A protoc plugin that runs grpcio-tools' bundled protoc for Python output.

buf hands every plugin a CodeGeneratorRequest. grpcio-tools ships the Python,
.pyi and grpc-python generators only inside its embedded protoc, not as plugin
binaries, so this plugin writes the request's descriptors to a file, runs that
protoc over them with --descriptor_set_in, and returns the files it wrote. The
generated code is therefore exactly what the pinned grpcio-tools would produce,
and matches the protobuf runtime range that grpcio-tools declares.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        descriptors = root / "descriptors.binpb"
        file_set = descriptor_pb2.FileDescriptorSet(file=request.proto_file)
        descriptors.write_bytes(file_set.SerializeToString())
        out = root / "out"
        out.mkdir()
        args = [
            "protoc",
            f"--descriptor_set_in={descriptors}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *request.file_to_generate,
        ]
        code = protoc.main(args)
        if code != 0:
            response.error = f"grpc_tools.protoc exited with {code}"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                generated = response.file.add()
                generated.name = path.relative_to(out).as_posix()
                generated.content = path.read_text(encoding="utf-8")
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
