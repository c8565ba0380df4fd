"""Small mechanisms every layer uses, each written once: constants, text and JSON-lines reading,
atomic writes, device and precision resolution."""
