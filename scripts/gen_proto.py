"""Generate the gRPC stubs of proto/rmserve/v1/reward.proto into the client package.

    python scripts/gen_proto.py              # (re)writes clients/python/rmserve_client/proto/
    python scripts/gen_proto.py --out DIR    # elsewhere; tests/test_grpc_stubs.py compares the two

The stubs are committed as the public package ``rmserve_client.proto``: the wire contract's one home,
imported by the client and the server alike, and nobody needs grpcio-tools to install either. protoc writes
``rmserve/v1/reward_pb2*.py`` with an absolute import (``from rmserve.v1 import reward_pb2``)
that would resolve to the *server* package; we flatten them into ``proto/`` and make that import
relative. The descriptor keeps its proto path (``rmserve/v1/reward.proto``), which is what
server reflection reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_ROOT = os.path.join(ROOT, "proto")
PROTO_FILE = "rmserve/v1/reward.proto"
DEFAULT_OUT = os.path.join(ROOT, "clients", "python", "rmserve_client", "proto")
GENERATED = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py")

INIT = '''"""rmserve.v1's wire contract: the gRPC stubs generated from proto/rmserve/v1/reward.proto (do not edit;
run `make proto`). The one public home of the contract: the client (rmserve_client) and the server
(rmserve.server.rpc) both import these.

Needs the `grpc` extra: `pip install rmserve-client[grpc]`.
"""
'''


def generate(out_dir: str) -> list[str]:
    """Write the stubs into ``out_dir``; return the paths written."""
    import grpc_tools
    from grpc_tools import protoc

    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {PROTO_FILE}")
        written = []
        for name in GENERATED:
            with open(os.path.join(tmp, "rmserve", "v1", name), encoding="utf-8") as f:
                text = f.read()
            text = text.replace("from rmserve.v1 import reward_pb2", "from . import reward_pb2")
            path = os.path.join(out_dir, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(path)
    init = os.path.join(out_dir, "__init__.py")
    with open(init, "w", encoding="utf-8") as f:
        f.write(INIT)
    return [init, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(os.path.relpath(path, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
