from __future__ import annotations

from deploytools.cli import main

main()
