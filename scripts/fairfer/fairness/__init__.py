"""Fairness metrics, their uncertainty, the tables and the dataset audit (rules in
``workflow/rules/fairness.smk``, ``evaluation.smk`` and ``group_labels.smk``)."""
