"""Request lines built from prompts, CSVs and JSONL, written by the validating batch-file writer."""
