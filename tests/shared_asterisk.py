"""Where the Asterisk wire transcripts (shared/asterisk/) are: the copy of shared/ beside this
checkout (as CI lays it out), else $CALLCENTER_SHARED_DIR, else /work/shared. Under CI=true a
missing copy fails the run (tests/conftest.py) instead of quietly skipping the protocol tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent


def _find() -> Path:
    candidates = [_REPO.parent / "shared", Path("/work/shared")]
    env = os.environ.get("CALLCENTER_SHARED_DIR")
    if env:
        candidates.insert(0, Path(env))
    for root in candidates:
        if (root / "asterisk").is_dir():
            return root / "asterisk"
    return candidates[0] / "asterisk"


ASTERISK = _find()
AMI_DIR = ASTERISK / "ami_transcripts"
AGI_DIR = ASTERISK / "agi_transcripts"
AMI_RAW = AMI_DIR / "raw"
AGI_RAW = AGI_DIR / "raw"
needs_ami = pytest.mark.skipif(not AMI_RAW.is_dir(), reason=f"AMI transcripts not in {ASTERISK}")
needs_agi = pytest.mark.skipif(not AGI_RAW.is_dir(), reason=f"AGI transcripts not in {ASTERISK}")
