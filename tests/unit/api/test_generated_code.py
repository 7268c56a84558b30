"""The committed generated code is exactly what the .proto produces today."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "proto" / "jobworker" / "v1"
FILES = ("jobworker_pb2.py", "jobworker_pb2.pyi", "jobworker_pb2_grpc.py", "jobworker_pb2_grpc.pyi")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([REPO / "scripts" / "gen-proto", out], check=True, capture_output=True)
    return out / "jobworker" / "v1"


@pytest.mark.parametrize("name", FILES)
def test_committed_generated_code_matches_the_proto(regenerated: Path, name: str) -> None:
    committed = (GENERATED / name).read_text()
    fresh = (regenerated / name).read_text()
    assert committed == fresh, f"{name} is stale: run scripts/gen-proto and commit the result"


def test_every_message_field_and_rpc_is_documented() -> None:
    """The .proto documents each element: a comment line right above every field and rpc."""
    lines = (GENERATED / "jobworker.proto").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        text = line.strip()
        element = text.startswith("rpc ") or (
            text.endswith(";") and "=" in text and not text.startswith(("option", "//"))
        )
        if element and not lines[number - 1].strip().startswith("//"):
            undocumented.append(text)
    assert not undocumented
