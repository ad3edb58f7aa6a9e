"""Generate the gRPC stubs from proto/ into python/llm_proxy/grpc/gen/, or check they are current.

    python scripts/gen_grpc.py          # regenerate
    python scripts/gen_grpc.py --check  # exit 1 if regenerating would change the committed stubs

The stubs come from grpcio-tools (pinned equal to grpcio), flattened into one package, with the
generated absolute import of the message module made package-relative.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "python" / "llm_proxy" / "grpc" / "gen"
INIT = '"""Generated gRPC stubs; regenerate with `python scripts/gen_grpc.py`, never edit."""\n'
# `from llm_proxy.v1 import gateway_pb2 as ...` -> `from . import gateway_pb2 as ...`
_ABSOLUTE_IMPORT = re.compile(r"^from llm_proxy\.v1 import (\w+_pb2)", re.MULTILINE)


def generate() -> dict[str, str]:
    """The stub files, by name, as they would be written."""
    protos = sorted(PROTO_ROOT.glob("llm_proxy/v1/*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}/llm_proxy/v1")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        done = subprocess.run(cmd, cwd=PROTO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"protoc failed:\n{done.stderr}")
        files = {"__init__.py": INIT}
        for path in sorted((Path(tmp) / "llm_proxy" / "v1").iterdir()):
            if path.suffix in (".py", ".pyi"):
                files[path.name] = _ABSOLUTE_IMPORT.sub(r"from . import \1", path.read_text())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the stubs are current")
    args = parser.parse_args(argv)
    files = generate()
    existing = {p.name for p in OUT.glob("*.py*")} if OUT.is_dir() else set()
    stale = sorted(existing - set(files))
    changed = sorted(
        name
        for name, text in files.items()
        if not (OUT / name).is_file() or (OUT / name).read_text() != text
    )
    if args.check:
        if changed or stale:
            print(
                "gRPC stubs are out of date (run `python scripts/gen_grpc.py`): "
                + ", ".join(changed + stale),
                file=sys.stderr,
            )
            return 1
        print("gRPC stubs are up to date")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name in changed:
        (OUT / name).write_text(files[name])
    for name in stale:
        (OUT / name).unlink()
    print(f"wrote {len(changed)} file(s), removed {len(stale)} in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
