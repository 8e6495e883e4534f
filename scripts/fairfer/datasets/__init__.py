"""Dataset adapters, downloads, split helpers and the checks at ingest (rules in
``workflow/rules/ingest.smk``)."""
