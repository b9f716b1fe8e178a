"""Long-running consumers of the XCom topic (run as processes)."""
