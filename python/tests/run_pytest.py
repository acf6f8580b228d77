# SPDX-License-Identifier: MIT
"""Run one pytest file for meson: exit 77 (skip) when pytest is missing or
when every test in the file was skipped, pytest's own status otherwise."""

import sys


def main() -> int:
    try:
        import pytest
    except ImportError:
        print("skip: pytest is not installed for", sys.executable)
        return 77

    class Outcomes:
        def __init__(self) -> None:
            self.ran = 0
            self.skipped = 0

        def pytest_runtest_logreport(self, report: "pytest.TestReport") -> None:
            if report.skipped:
                self.skipped += 1
            elif report.when == "call":
                self.ran += 1

    outcomes = Outcomes()
    rc = int(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", *sys.argv[1:]],
                         plugins=[outcomes]))
    if rc == 0 and outcomes.ran == 0 and outcomes.skipped > 0:
        return 77
    return rc


if __name__ == "__main__":
    sys.exit(main())
