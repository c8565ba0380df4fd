"""Data: reading text corpora (`corpus`) and fetching the bundled datasets (`fetch`)."""
