"""HTTP routes served by the same process as the UI (thin: parse, authorize, call services)."""
