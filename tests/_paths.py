"""Where the shared spec and golden vectors live (override with AMX_REPACK_SHARED)."""
import os
from pathlib import Path

SHARED_DIR = Path(os.environ.get("AMX_REPACK_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
