"""The committed generated code is what `make proto` makes from proto/ today."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True,
                   capture_output=True, timeout=60)
    generated = tmp_path / "otesse" / "auth" / "v1"
    committed = ROOT / "otesse" / "auth" / "v1"
    names = sorted(path.name for path in generated.iterdir() if path.is_file())
    assert names == sorted(path.name for path in committed.iterdir() if path.is_file()
                           and path.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code, run `make proto`: {mismatch}"


def test_generated_grpc_modules_import_without_path_tricks() -> None:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-I", "-c",
         "from otesse.auth.v1 import registry_pb2_grpc, token_pb2_grpc, authorization_code_pb2"],
        cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
